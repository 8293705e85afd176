package nvml

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// gpmNode is a one-GPU mock node whose GPU is MIG-enabled, with GPM served
// by the mock library: each instance is busy busy[gi] percent of the time,
// a GPM sample records when it was taken, and GpmMetricsGet returns the
// time-weighted busy share between two samples, as the driver does.
type gpmNode struct {
	*mockNode
	mu        sync.Mutex
	instances []*mock.Device // nil entries are empty slots
	used      map[int]uint64 // by GPU instance ID
	busy      map[int]func(t time.Time) float64
	taken     map[gonvml.GpmSample]time.Time
	gis       map[gonvml.GpmSample]int
	allocs    int
	frees     int
	queries   int
	metricIDs []uint32
	migGetRet gonvml.Return
}

func migUUID(gi int) string { return fmt.Sprintf("MIG-00000000-0000-4000-9000-%012d", gi) }

func newGPMNode(t testing.TB, arch gonvml.DeviceArchitecture, gpm bool, gis ...int) *gpmNode {
	t.Helper()
	n := &gpmNode{mockNode: newMockNode(t, 1), used: map[int]uint64{}, busy: map[int]func(time.Time) float64{}, taken: map[gonvml.GpmSample]time.Time{}, gis: map[gonvml.GpmSample]int{}, migGetRet: gonvml.SUCCESS}
	parent := n.dev(0)
	parent.MigMode = gonvml.DEVICE_MIG_ENABLE
	parent.GetArchitectureFunc = func() (gonvml.DeviceArchitecture, gonvml.Return) { return arch, gonvml.SUCCESS }
	parent.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 7, gonvml.SUCCESS }
	parent.GetMigDeviceHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		n.mu.Lock()
		defer n.mu.Unlock()
		if i < len(n.instances) && n.instances[i] != nil {
			return n.instances[i], gonvml.SUCCESS
		}
		return nil, gonvml.ERROR_NOT_FOUND
	}
	for _, gi := range gis {
		n.create(gi)
	}
	srv := n.srv
	srv.GpmQueryDeviceSupportFunc = func(d gonvml.Device) (gonvml.GpmSupport, gonvml.Return) {
		n.queries++
		if d != parent {
			return gonvml.GpmSupport{}, gonvml.ERROR_INVALID_ARGUMENT
		}
		s := gonvml.GpmSupport{Version: gonvml.GPM_SUPPORT_VERSION}
		if gpm {
			s.IsSupportedDevice = 1
		}
		return s, gonvml.SUCCESS
	}
	srv.GpmSampleAllocFunc = func() (gonvml.GpmSample, gonvml.Return) {
		n.allocs++
		return &mock.GpmSample{}, gonvml.SUCCESS
	}
	srv.GpmSampleFreeFunc = func(s gonvml.GpmSample) gonvml.Return {
		n.frees++
		delete(n.taken, s)
		return gonvml.SUCCESS
	}
	srv.GpmMigSampleGetFunc = func(d gonvml.Device, gi int, s gonvml.GpmSample) gonvml.Return {
		if d != parent {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		if n.migGetRet != gonvml.SUCCESS {
			return n.migGetRet
		}
		n.taken[s], n.gis[s] = n.clock.Now(), gi
		return gonvml.SUCCESS
	}
	srv.GpmMetricsGetFunc = func(m *gonvml.GpmMetricsGetType) gonvml.Return {
		t1, ok1 := n.taken[m.Sample1]
		t2, ok2 := n.taken[m.Sample2]
		if !ok1 || !ok2 || !t2.After(t1) {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		gi := n.gis[m.Sample2]
		if n.gis[m.Sample1] != gi {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		for i := 0; i < int(m.NumMetrics); i++ {
			n.metricIDs = append(n.metricIDs, m.Metrics[i].MetricId)
			// Mean busy share over (t1, t2], at one-millisecond steps.
			var sum float64
			var k int
			for t := t1.Add(time.Millisecond); !t.After(t2); t = t.Add(time.Millisecond) {
				sum += n.busy[gi](t)
				k++
			}
			m.Metrics[i].Value = sum / float64(k)
			m.Metrics[i].NvmlReturn = uint32(gonvml.SUCCESS)
		}
		return gonvml.SUCCESS
	}
	return n
}

// create adds a 1g.10gb instance with GPU instance ID gi in the first free slot.
func (n *gpmNode) create(gi int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	md := &mock.Device{
		GetUUIDFunc:              func() (string, gonvml.Return) { return migUUID(gi), gonvml.SUCCESS },
		GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return gi, gonvml.SUCCESS },
		GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
		GetNameFunc:              func() (string, gonvml.Return) { return "NVIDIA H100 80GB HBM3 MIG 1g.10gb", gonvml.SUCCESS },
		GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
			n.mu.Lock()
			defer n.mu.Unlock()
			return gonvml.Memory{Total: 10 << 30, Used: n.used[gi]}, gonvml.SUCCESS
		},
	}
	if n.busy[gi] == nil {
		n.busy[gi] = func(time.Time) float64 { return 0 }
	}
	for i, d := range n.instances {
		if d == nil {
			n.instances[i] = md
			return
		}
	}
	n.instances = append(n.instances, md)
}

// destroy removes the instance with GPU instance ID gi; its handle then
// fails as a destroyed instance's does.
func (n *gpmNode) destroy(gi int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, d := range n.instances {
		if d != nil {
			if id, _ := d.GetGpuInstanceId(); id == gi {
				d.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) { return gonvml.Memory{}, gonvml.ERROR_INVALID_ARGUMENT }
				n.instances[i] = nil
			}
		}
	}
}

func (n *gpmNode) poll(s *Sampler, times int, step time.Duration) {
	for i := 0; i < times; i++ {
		s.Poll()
		n.clock.Advance(step)
	}
}

func TestSamplerMIGDutyCycleFromGPM(t *testing.T) {
	n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 7, 8)
	start := n.clock.Now()
	// Instance 7 busy 80 % for the first 30 s, then idle; instance 8 at 25 %.
	n.busy[7] = func(t time.Time) float64 {
		if t.Sub(start) <= 30*time.Second {
			return 80
		}
		return 0
	}
	n.busy[8] = func(time.Time) float64 { return 25 }
	n.used[7], n.used[8] = 3<<30, 1<<30
	s := n.sampler(60 * time.Second)
	s.Poll()
	if r := byUUID(s.Snapshot())[migUUID(7)]; r.HasDutyCycle {
		t.Fatalf("duty cycle %v after one GPM sample; two are needed", r.DutyCycle)
	}
	// Polls every 5 s from start+5s to start+60s: 12 intervals, the first
	// six at 80 %, the rest at 0.
	for i := 0; i < 12; i++ {
		n.clock.Advance(5 * time.Second)
		if i == 5 {
			n.used[7] = 7 << 30
		}
		s.Poll()
	}
	got := byUUID(s.Snapshot())
	r7, r8 := got[migUUID(7)], got[migUUID(8)]
	if !r7.HasDutyCycle || math.Abs(r7.DutyCycle-40) > 1e-6 {
		t.Errorf("instance 7 duty = %v (%v), want 40 (80 %% for half the window)", r7.DutyCycle, r7.HasDutyCycle)
	}
	if !r8.HasDutyCycle || math.Abs(r8.DutyCycle-25) > 1e-6 {
		t.Errorf("instance 8 duty = %v (%v), want 25", r8.DutyCycle, r8.HasDutyCycle)
	}
	if r7.MemoryUsed != 7<<30 || r7.MemoryTotal != 10<<30 || r8.MemoryUsed != 1<<30 {
		t.Errorf("instance memory = %d/%d and %d; want the latest used bytes per instance", r7.MemoryUsed, r7.MemoryTotal, r8.MemoryUsed)
	}
	if parent := got[n.dev(0).UUID]; parent.HasDutyCycle || !parent.MIGEnabled {
		t.Errorf("MIG-enabled parent = %+v; want no duty cycle", parent)
	}
	for _, id := range n.metricIDs {
		if id != uint32(gonvml.GPM_METRIC_GRAPHICS_UTIL) {
			t.Fatalf("GPM metric %d asked, want GRAPHICS_UTIL", id)
		}
	}
	// Two buffers per instance, reused at every poll.
	if n.allocs != 4 {
		t.Errorf("%d GPM samples allocated for 2 instances over 13 polls, want 4", n.allocs)
	}
}

func TestSamplerMIGWithoutGPM(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arch    gonvml.DeviceArchitecture
		gpm     bool
		queries int
	}{
		{"A100: GPM does not exist, not asked", gonvml.DEVICE_ARCH_AMPERE, true, 0},
		{"Hopper, driver says unsupported", gonvml.DEVICE_ARCH_HOPPER, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newGPMNode(t, tc.arch, tc.gpm, 1, 2)
			n.busy[1] = func(time.Time) float64 { return 50 }
			n.used[1] = 2 << 30
			s := n.sampler(time.Minute)
			n.poll(s, 3, 5*time.Second)
			r := byUUID(s.Snapshot())[migUUID(1)]
			if r.HasDutyCycle || !r.HasMemory || r.MemoryUsed != 2<<30 {
				t.Errorf("instance = %+v; want memory and no duty cycle", r)
			}
			if n.queries != tc.queries || n.allocs != 0 {
				t.Errorf("GPM support queries %d (want %d), samples allocated %d (want 0)", n.queries, tc.queries, n.allocs)
			}
		})
	}
}

func TestSamplerMIGLayoutChangeSeenAtNextPoll(t *testing.T) {
	n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1, 2)
	n.busy[1] = func(time.Time) float64 { return 60 }
	s := NewSampler(n.srv, Config{Window: time.Minute, Interval: 5 * time.Second, RediscoverInterval: time.Hour, Now: n.clock.Now})
	n.poll(s, 3, 5*time.Second)
	if got := len(s.Snapshot().Devices); got != 3 {
		t.Fatalf("%d devices, want the GPU and 2 instances", got)
	}
	// The layout changes: instance 2 is destroyed and 3 and 4 created, well
	// before the hour-long rediscovery interval.
	n.destroy(2)
	n.create(3)
	n.create(4)
	s.Poll()
	got := byUUID(s.Snapshot())
	if _, ok := got[migUUID(2)]; ok {
		t.Error("destroyed instance still served")
	}
	for _, gi := range []int{3, 4} {
		if r, ok := got[migUUID(gi)]; !ok || r.GPUInstance != gi || r.ParentUUID != n.dev(0).UUID {
			t.Errorf("new instance %d = %+v (found %v)", gi, r, ok)
		}
	}
	// The surviving instance kept its history.
	if r := got[migUUID(1)]; !r.HasDutyCycle || math.Abs(r.DutyCycle-60) > 1e-6 {
		t.Errorf("surviving instance duty = %v (%v), want 60", r.DutyCycle, r.HasDutyCycle)
	}
	if n.frees != 2 {
		t.Errorf("%d GPM samples freed, want the destroyed instance's 2", n.frees)
	}
	// An unchanged layout does not rediscover: no new handles are described.
	names := 0
	for _, d := range n.instances {
		if d != nil {
			names += len(d.GetNameCalls())
		}
	}
	n.poll(s, 3, 5*time.Second)
	after := 0
	for _, d := range n.instances {
		if d != nil {
			after += len(d.GetNameCalls())
		}
	}
	if after != names {
		t.Errorf("instances described again %d times with an unchanged layout", after-names)
	}

	// MIG turned off (after a GPU reset): the GPU is whole again.
	n.dev(0).MigMode = gonvml.DEVICE_MIG_DISABLE
	s.Poll()
	n.clock.Advance(5 * time.Second)
	s.Poll()
	snap := s.Snapshot()
	if len(snap.Devices) != 1 || snap.Devices[0].MIGEnabled || !snap.Devices[0].HasDutyCycle {
		t.Errorf("after MIG was disabled: %+v; want one whole GPU with a duty cycle", snap.Devices)
	}
	if n.frees != n.allocs {
		t.Errorf("GPM samples allocated %d, freed %d: buffers leak", n.allocs, n.frees)
	}
}

func TestSamplerGPMFailures(t *testing.T) {
	t.Run("sample not supported stops GPM", func(t *testing.T) {
		n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1)
		n.migGetRet = gonvml.ERROR_NOT_SUPPORTED
		s := n.sampler(time.Minute)
		n.poll(s, 3, 5*time.Second)
		if r := byUUID(s.Snapshot())[migUUID(1)]; r.HasDutyCycle || !r.HasMemory {
			t.Errorf("instance = %+v", r)
		}
		if n.allocs != 2 || n.frees != 2 {
			t.Errorf("allocated %d, freed %d; want the buffers given back once GPM is found unsupported", n.allocs, n.frees)
		}
	})
	t.Run("values over 100 rejected", func(t *testing.T) {
		n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1)
		n.busy[1] = func(time.Time) float64 { return 180 }
		s := n.sampler(time.Minute)
		n.poll(s, 3, 5*time.Second)
		if r := byUUID(s.Snapshot())[migUUID(1)]; r.HasDutyCycle {
			t.Errorf("duty %v accepted from GPM values over 100", r.DutyCycle)
		}
		if s.Errors()["value_out_of_range"] != 2 {
			t.Errorf("errors = %v", s.Errors())
		}
	})
	t.Run("lost GPU", func(t *testing.T) {
		n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1)
		s := n.sampler(time.Minute)
		n.poll(s, 2, 5*time.Second)
		n.migGetRet = gonvml.ERROR_GPU_IS_LOST
		s.Poll()
		if _, ok := byUUID(s.Snapshot())[migUUID(1)]; ok {
			t.Error("instance of a lost GPU still served")
		}
		if n.frees != 2 {
			t.Errorf("freed %d GPM samples of the lost instance, want 2", n.frees)
		}
	})
}

// NVML lists a MIG instance's processes and their memory but gives no
// per-process utilization there (nvml.h, nvmlDeviceGetProcessUtilization:
// "On MIG-enabled GPUs, querying process utilization is not currently
// supported"). The process list is still served, every poll, and the
// unsupported call is made once.
func TestSamplerMIGProcessesWithoutUtilization(t *testing.T) {
	n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1)
	utilCalls := 0
	inst := n.instances[0]
	inst.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return []gonvml.ProcessInfo{{Pid: 7, UsedGpuMemory: 3 << 30}, {Pid: 9, UsedGpuMemory: 1 << 30}}, gonvml.SUCCESS
	}
	inst.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return nil, gonvml.ERROR_NOT_SUPPORTED }
	inst.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		utilCalls++
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	s := NewSampler(n.srv, Config{Window: time.Minute, Now: n.clock.Now, Processes: true})
	n.poll(s, 3, 5*time.Second)
	r := byUUID(s.Snapshot())[migUUID(1)]
	if !r.ProcessesOK || r.UtilReason != "not_supported" || len(r.Processes) != 2 {
		t.Fatalf("instance processes ok %v, util reason %q, %d processes; want the list served without utilization", r.ProcessesOK, r.UtilReason, len(r.Processes))
	}
	for _, p := range r.Processes {
		if !p.HasMemory || p.HasUtil {
			t.Errorf("process %+v: want memory and no utilization", p)
		}
	}
	if r.Processes[0].MemoryUsed != 3<<30 {
		t.Errorf("PID 7 memory %d", r.Processes[0].MemoryUsed)
	}
	if utilCalls != 1 {
		t.Errorf("GetProcessUtilization called %d times, want once", utilCalls)
	}
	if len(s.Errors()) != 0 {
		t.Errorf("errors counted: %v", s.Errors())
	}
}

// Without MIG-monitor privilege NVML withholds a MIG-enabled GPU's own
// memory (nvml.h, nvmlDeviceGetMemoryInfo: aggregate information "only if
// the caller has appropriate privileges"). The GPU then serves its
// instances' sum; the refusal is asked and counted once, not every poll.
func TestSamplerMIGParentMemoryWithoutPrivilege(t *testing.T) {
	n := newGPMNode(t, gonvml.DEVICE_ARCH_HOPPER, true, 1, 2)
	n.used[1], n.used[2] = 2<<30, 3<<30
	calls := 0
	parent := n.dev(0)
	parent.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		calls++
		return gonvml.Memory_v2{}, gonvml.ERROR_NO_PERMISSION
	}
	parent.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) {
		calls++
		return gonvml.Memory{}, gonvml.ERROR_NO_PERMISSION
	}
	s := n.sampler(time.Minute)
	n.poll(s, 4, 5*time.Second)
	r := byUUID(s.Snapshot())[parent.UUID]
	if !r.HasMemory || r.MemoryUsed != 5<<30 || r.MemoryTotal != 20<<30 {
		t.Errorf("MIG-enabled GPU memory %d of %d (%v); want its instances' 5 GiB of 20 GiB", r.MemoryUsed, r.MemoryTotal, r.HasMemory)
	}
	if calls != 1 || s.Errors()["no_permission"] != 1 {
		t.Errorf("memory asked %d times, no_permission counted %d times; want once each", calls, s.Errors()["no_permission"])
	}
}
