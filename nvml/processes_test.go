package nvml

import (
	"math"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// withProcesses gives device 0 of the mock two processes, 101 at util101
// and 202 at util202 percent SM, one sample per second.
func withProcesses(m *mockNode, util101, util202 *uint32, running *[]uint32) {
	dev := m.dev(0)
	dev.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		var out []gonvml.ProcessInfo
		for _, pid := range *running {
			out = append(out, gonvml.ProcessInfo{Pid: pid, UsedGpuMemory: uint64(pid) << 20})
		}
		return out, gonvml.SUCCESS
	}
	dev.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	dev.GetProcessUtilizationFunc = func(last uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		now := uint64(m.clock.Now().UnixMicro())
		var out []gonvml.ProcessUtilizationSample
		for ts := now - 15_000_000; ts <= now; ts += 1_000_000 {
			if ts <= last {
				continue
			}
			for _, pid := range *running {
				u := *util101
				if pid == 202 {
					u = *util202
				}
				if u > 0 { // NVML reports only processes that ran
					out = append(out, gonvml.ProcessUtilizationSample{Pid: pid, TimeStamp: ts, SmUtil: u})
				}
			}
		}
		if len(out) == 0 {
			return nil, gonvml.ERROR_NOT_FOUND
		}
		return out, gonvml.SUCCESS
	}
}

func TestSamplerProcesses(t *testing.T) {
	m := newMockNode(t, 1)
	u101, u202 := uint32(70), uint32(10)
	running := []uint32{101, 202}
	withProcesses(m, &u101, &u202, &running)
	s := NewSampler(m.srv, Config{Window: 20 * time.Second, Interval: 5 * time.Second, Now: m.clock.Now, Processes: true})
	for i := 0; i < 4; i++ {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	r := s.Snapshot().Devices[0]
	if !r.ProcessesOK || len(r.Processes) != 2 {
		t.Fatalf("processes = %+v (%v)", r.Processes, r.ProcessesOK)
	}
	if p := r.Processes[0]; p.PID != 101 || math.Abs(p.SMUtil-70) > 1e-9 || p.MemoryUsed != 101<<20 {
		t.Fatalf("pid 101 = %+v", p)
	}
	if p := r.Processes[1]; p.PID != 202 || math.Abs(p.SMUtil-10) > 1e-9 {
		t.Fatalf("pid 202 = %+v", p)
	}

	// 202 goes idle: NVML stops sampling it; over the window its mean falls.
	u202 = 0
	for i := 0; i < 2; i++ {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	s.Poll()
	r = s.Snapshot().Devices[0]
	if p := r.Processes[1]; p.SMUtil >= 10 || !p.HasUtil {
		t.Fatalf("idle pid 202 = %+v, want below 10", p)
	}

	// 101 exits: it is gone from the next snapshot and from the sampler's state.
	running = []uint32{202}
	m.clock.Advance(5 * time.Second)
	s.Poll()
	r = s.Snapshot().Devices[0]
	if len(r.Processes) != 1 || r.Processes[0].PID != 202 {
		t.Fatalf("after exit: %+v", r.Processes)
	}
	if n := len(s.devices[0].procs); n != 1 {
		t.Fatalf("sampler keeps %d process windows, want 1", n)
	}
}

func TestSamplerProcessesNotSupported(t *testing.T) {
	m := newMockNode(t, 1)
	calls := 0
	m.dev(0).GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		calls++
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	s := NewSampler(m.srv, Config{Window: time.Minute, Now: m.clock.Now, Processes: true})
	s.Poll()
	s.Poll()
	r := s.Snapshot().Devices[0]
	if r.ProcessesOK || r.ProcessesReason != "not_supported" || !r.HasDutyCycle || !r.HasMemory {
		t.Fatalf("reading = %+v", r)
	}
	if calls != 1 {
		t.Fatalf("unsupported call retried %d times, want once", calls)
	}
}

// go-nvml reslices GetProcessUtilization's buffer to the count of its
// second call, which panics when a process started between its two calls.
// The poll counts it and goes on; the next poll reads the processes again.
func TestProcessUtilizationPanicIsCounted(t *testing.T) {
	m := newMockNode(t, 1)
	u101, u202 := uint32(70), uint32(10)
	running := []uint32{101, 202}
	withProcesses(m, &u101, &u202, &running)
	healthy := m.dev(0).GetProcessUtilizationFunc
	m.dev(0).GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		buf := make([]gonvml.ProcessUtilizationSample, 2)
		grown := 3 // a process started between the two calls
		return buf[:grown:grown], gonvml.SUCCESS
	}
	s := NewSampler(m.srv, Config{Window: 20 * time.Second, Interval: 5 * time.Second, Now: m.clock.Now, Processes: true})
	s.Poll()
	r := s.Snapshot().Devices[0]
	if r.ProcessesOK || s.Errors()["process_utilization_panic"] != 1 {
		t.Fatalf("processes ok %v, errors %v: want the panic counted and no processes this poll", r.ProcessesOK, s.Errors())
	}
	if !r.HasMemory {
		t.Error("the rest of the device's poll was lost")
	}
	m.dev(0).GetProcessUtilizationFunc = healthy
	m.clock.Advance(5 * time.Second)
	s.Poll()
	if r := s.Snapshot().Devices[0]; !r.ProcessesOK || len(r.Processes) != 2 {
		t.Fatalf("after the panic: processes ok %v, %d processes", r.ProcessesOK, len(r.Processes))
	}
}
