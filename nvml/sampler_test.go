package nvml

import (
	"math"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// mockNode is a dgxa100 mock server whose devices produce one utilization
// sample per second at util[i] and report used[i] bytes.
type mockNode struct {
	srv   *server.Server
	clock *testkit.Clock
	util  []uint32
	used  []uint64
	calls map[string]int
	mu    sync.Mutex
}

func newMockNode(t testing.TB, n int) *mockNode {
	t.Helper()
	m := &mockNode{srv: dgxa100.New(), clock: testkit.NewClock(time.Unix(1_700_000_000, 0)), calls: map[string]int{}}
	m.srv.Devices = m.srv.Devices[:n]
	m.util = make([]uint32, n)
	m.used = make([]uint64, n)
	for i, d := range m.srv.Devices {
		i, dev := i, d.(*server.Device)
		dev.GetSamplesFunc = func(_ gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			m.count("samples")
			now := uint64(m.clock.Now().UnixMicro())
			var out []gonvml.Sample
			for ts := now - 15_000_000; ts <= now; ts += 1_000_000 {
				if ts > last {
					out = append(out, gonvml.Sample{TimeStamp: ts, SampleValue: EncodeUint32Sample(m.util[i])})
				}
			}
			if len(out) == 0 {
				return 0, nil, gonvml.ERROR_NOT_FOUND
			}
			return gonvml.VALUE_TYPE_UNSIGNED_INT, out, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			m.count("memory")
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: m.used[i]}, gonvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
			return gonvml.Utilization{Gpu: m.util[i]}, gonvml.SUCCESS
		}
	}
	return m
}

func (m *mockNode) count(k string) { m.mu.Lock(); m.calls[k]++; m.mu.Unlock() }

func (m *mockNode) dev(i int) *server.Device { return m.srv.Devices[i].(*server.Device) }

func (m *mockNode) sampler(window time.Duration) *Sampler {
	return NewSampler(m.srv, Config{Window: window, Interval: 5 * time.Second, Now: m.clock.Now})
}

func byUUID(s *Snapshot) map[string]Reading {
	out := map[string]Reading{}
	for _, r := range s.Devices {
		out[r.UUID] = r
	}
	return out
}

func TestSamplerDutyCycleOverLongWindow(t *testing.T) {
	m := newMockNode(t, 2)
	s := m.sampler(60 * time.Second)
	// 30 s at 100 %, then 30 s at 0 %: NVML alone (16 s) would say 0.
	m.util[0], m.util[1] = 100, 40
	for i := 0; i < 6; i++ {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	m.util[0] = 0
	for i := 0; i < 6; i++ {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	s.Poll()
	snap := s.Snapshot()
	if !snap.Up || len(snap.Devices) != 2 {
		t.Fatalf("snapshot = %+v", snap)
	}
	got := byUUID(snap)
	d0 := got[m.dev(0).UUID]
	// Window (t0, t0+60s]: 60 one-second samples. The mock stamps a poll's
	// new samples with the current level, so t0+1..t0+25 are at 100 and
	// t0+26..t0+60 at 0: 25/60.
	if want := 100 * 25.0 / 60; !d0.HasDutyCycle || math.Abs(d0.DutyCycle-want) > 1e-9 {
		t.Fatalf("device 0 duty = %v (%v), want %v", d0.DutyCycle, d0.HasDutyCycle, want)
	}
	if d1 := got[m.dev(1).UUID]; d1.DutyCycle != 40 {
		t.Fatalf("device 1 duty = %v, want 40", d1.DutyCycle)
	}
}

func TestSamplerMemory(t *testing.T) {
	m := newMockNode(t, 1)
	m.used[0] = 3 << 30
	s := m.sampler(time.Minute)
	s.Poll()
	r := s.Snapshot().Devices[0]
	if !r.HasMemory || r.MemoryUsed != 3<<30 || r.MemoryTotal != 40960<<20 {
		t.Fatalf("memory = %d/%d (%v)", r.MemoryUsed, r.MemoryTotal, r.HasMemory)
	}
	// v2 unsupported: fall back to v1.
	m.dev(0).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NOT_SUPPORTED }
	m.dev(0).MemoryInfo.Used = 1 << 30
	s.Poll()
	if r := s.Snapshot().Devices[0]; r.MemoryUsed != 1<<30 {
		t.Fatalf("v1 fallback used = %d", r.MemoryUsed)
	}
}

func TestSamplerFallsBackToUtilizationRates(t *testing.T) {
	m := newMockNode(t, 1)
	m.dev(0).GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
		return 0, nil, gonvml.ERROR_NOT_SUPPORTED
	}
	m.util[0] = 70
	s := m.sampler(time.Minute)
	s.Poll()
	m.clock.Advance(2 * time.Second)
	s.Poll()
	if r := s.Snapshot().Devices[0]; !r.HasDutyCycle || r.DutyCycle != 70 {
		t.Fatalf("duty = %v (%v), want 70 from utilization rates", r.DutyCycle, r.HasDutyCycle)
	}
}

func TestSamplerRejectsValuesOver100(t *testing.T) {
	m := newMockNode(t, 1)
	m.util[0] = 250
	s := m.sampler(time.Minute)
	s.Poll()
	if r := s.Snapshot().Devices[0]; r.HasDutyCycle {
		t.Fatalf("duty %v accepted from values over 100", r.DutyCycle)
	}
	if s.Errors()["value_out_of_range"] == 0 {
		t.Fatal("out-of-range values not counted")
	}
}

func TestSamplerLostGPU(t *testing.T) {
	m := newMockNode(t, 3)
	s := m.sampler(time.Minute)
	s.Poll()
	lost := m.dev(1).UUID
	m.dev(1).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_GPU_IS_LOST }
	m.clock.Advance(5 * time.Second)
	s.Poll()
	got := byUUID(s.Snapshot())
	if _, ok := got[lost]; ok || len(got) != 2 {
		t.Fatalf("lost GPU still served: %v", got)
	}
	if s.Errors()["gpu_lost"] != 1 {
		t.Fatalf("errors = %v", s.Errors())
	}
}

func TestSamplerInitFailsThenSucceeds(t *testing.T) {
	m := newMockNode(t, 2)
	ok := false
	m.srv.InitFunc = func() gonvml.Return {
		if ok {
			return gonvml.SUCCESS
		}
		return gonvml.ERROR_LIBRARY_NOT_FOUND
	}
	calledCount := false
	m.srv.DeviceGetCountFunc = func() (int, gonvml.Return) {
		if !ok {
			calledCount = true // NVML must not be used before Init succeeds
		}
		return len(m.srv.Devices), gonvml.SUCCESS
	}
	s := m.sampler(time.Minute)
	s.Poll()
	if snap := s.Snapshot(); snap.Up || snap.Err == nil || len(snap.Devices) != 0 {
		t.Fatalf("snapshot after failed init = %+v", snap)
	}
	ok = true
	s.Poll()
	if snap := s.Snapshot(); !snap.Up || len(snap.Devices) != 2 {
		t.Fatalf("snapshot after init = %+v", snap)
	}
	if calledCount {
		t.Fatal("NVML called before a successful Init")
	}
	if s.Errors()["init"] != 1 {
		t.Fatalf("errors = %v", s.Errors())
	}
}

func TestSamplerOtherErrorsKeepDevice(t *testing.T) {
	m := newMockNode(t, 2)
	m.dev(0).GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
		return 0, nil, gonvml.ERROR_UNKNOWN
	}
	s := m.sampler(time.Minute)
	s.Poll()
	got := byUUID(s.Snapshot())
	r := got[m.dev(0).UUID]
	if r.HasDutyCycle || !r.HasMemory {
		t.Fatalf("device with failing samples = %+v; want memory but no duty cycle", r)
	}
	if s.Errors()["unknown"] != 1 {
		t.Fatalf("errors = %v", s.Errors())
	}
}

func TestSamplerDiscoversMIG(t *testing.T) {
	m := newMockNode(t, 1)
	parent := m.dev(0)
	parent.MigMode = gonvml.DEVICE_MIG_ENABLE
	migs := []*mock.Device{}
	for j := 0; j < 2; j++ {
		j := j
		md := &mock.Device{
			GetUUIDFunc: func() (string, gonvml.Return) {
				return "MIG-00000000-0000-4000-8000-00000000000" + string(rune('a'+j)), gonvml.SUCCESS
			},
			GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return 3 + j, gonvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
			GetNameFunc:              func() (string, gonvml.Return) { return "NVIDIA A100-SXM4-40GB MIG 3g.20gb", gonvml.SUCCESS },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				return gonvml.Memory{Total: 20 << 30, Used: uint64(j+1) << 30}, gonvml.SUCCESS
			},
		}
		migs = append(migs, md)
	}
	parent.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 7, gonvml.SUCCESS }
	parent.GetMigDeviceHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i < len(migs) {
			return migs[i], gonvml.SUCCESS
		}
		return nil, gonvml.ERROR_NOT_FOUND
	}
	s := m.sampler(time.Minute)
	s.Poll()
	snap := s.Snapshot()
	if len(snap.Devices) != 3 {
		t.Fatalf("devices = %+v", snap.Devices)
	}
	if !snap.Devices[0].MIGEnabled || snap.Devices[0].HasDutyCycle {
		t.Fatalf("parent = %+v", snap.Devices[0])
	}
	mig := snap.Devices[2]
	if mig.ParentUUID != parent.UUID || mig.GPUInstance != 4 || mig.Profile != "3g.20gb" || mig.MemoryTotal != 20<<30 || mig.MemoryUsed != 2<<30 || mig.HasDutyCycle {
		t.Fatalf("MIG instance = %+v", mig)
	}
}

func TestSamplerKeepsMemoryTotalWhenAReadFails(t *testing.T) {
	m := newMockNode(t, 1)
	s := m.sampler(time.Minute)
	s.Poll()
	m.dev(0).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_UNKNOWN }
	s.Poll()
	r := s.Snapshot().Devices[0]
	if r.HasMemory || r.MemoryTotal != 40960<<20 {
		t.Fatalf("after a failed read: used %v (%v), total %d; want no used bytes and the known total", r.MemoryUsed, r.HasMemory, r.MemoryTotal)
	}
}
