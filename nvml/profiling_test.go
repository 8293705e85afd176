package nvml

import (
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// wholeGPM makes the mock node's GPUs Hopper (or arch) with GPM on whole
// GPUs: every metric reads value(metric, poll) between two samples.
func wholeGPM(m *mockNode, arch gonvml.DeviceArchitecture, value func(id gonvml.GpmMetricId, poll int) (float64, gonvml.Return)) *int {
	polls := new(int)
	for i := range m.srv.Devices {
		m.dev(i).GetArchitectureFunc = func() (gonvml.DeviceArchitecture, gonvml.Return) { return arch, gonvml.SUCCESS }
	}
	m.srv.GpmQueryDeviceSupportFunc = func(gonvml.Device) (gonvml.GpmSupport, gonvml.Return) {
		return gonvml.GpmSupport{IsSupportedDevice: 1}, gonvml.SUCCESS
	}
	m.srv.GpmSampleAllocFunc = func() (gonvml.GpmSample, gonvml.Return) { return &mock.GpmSample{}, gonvml.SUCCESS }
	m.srv.GpmSampleFreeFunc = func(gonvml.GpmSample) gonvml.Return { return gonvml.SUCCESS }
	m.srv.GpmSampleGetFunc = func(gonvml.Device, gonvml.GpmSample) gonvml.Return { return gonvml.SUCCESS }
	m.srv.GpmMetricsGetFunc = func(r *gonvml.GpmMetricsGetType) gonvml.Return {
		*polls++
		for i := 0; i < int(r.NumMetrics); i++ {
			v, ret := value(gonvml.GpmMetricId(r.Metrics[i].MetricId), *polls)
			r.Metrics[i].Value, r.Metrics[i].NvmlReturn = v, uint32(ret)
		}
		return gonvml.SUCCESS
	}
	return polls
}

func profilingSampler(m *mockNode) *Sampler {
	return NewSampler(m.srv, Config{Window: time.Minute, Interval: 5 * time.Second, Now: m.clock.Now, Profiling: true})
}

func TestProfilingWholeGPUWindowMean(t *testing.T) {
	m := newMockNode(t, 1)
	m.util[0] = 90
	wholeGPM(m, gonvml.DEVICE_ARCH_HOPPER, func(id gonvml.GpmMetricId, poll int) (float64, gonvml.Return) {
		switch id {
		case gonvml.GPM_METRIC_SM_UTIL:
			return float64(10 * poll), gonvml.SUCCESS // 10, 20, 30
		case gonvml.GPM_METRIC_FP64_UTIL:
			return 0, gonvml.ERROR_NOT_SUPPORTED
		case gonvml.GPM_METRIC_PCIE_TX_PER_SEC:
			return 2, gonvml.SUCCESS // MiB/s
		}
		return 50, gonvml.SUCCESS
	})
	s := profilingSampler(m)
	for range 4 {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	r := s.Snapshot().Devices[0]
	if got := r.Profiling[ProfSMActive]; !got.OK || got.V != 0.2 {
		t.Errorf("sm_active = %+v, want the window mean 0.2", got)
	}
	if got := r.Profiling[7]; !got.OK || got.V != 2<<20 || ProfilingMetrics[7].Name != "pcie_tx" {
		t.Errorf("pcie_tx = %+v, want 2 MiB/s in bytes", got)
	}
	if r.Profiling[6].OK {
		t.Errorf("fp64_active answered NOT_SUPPORTED but is present: %+v", r.Profiling[6])
	}
	if !r.HasDutyCycle || r.DutyCycle != 90 {
		t.Errorf("duty cycle = %v (%v), want 90 from utilization samples, not GPM", r.DutyCycle, r.HasDutyCycle)
	}
}

// GPUs without GPM (A100, L4, T4, ...) have no profiling readings and are
// never asked for GPM samples.
func TestProfilingAbsentBeforeHopper(t *testing.T) {
	m := newMockNode(t, 2)
	polls := wholeGPM(m, gonvml.DEVICE_ARCH_AMPERE, func(gonvml.GpmMetricId, int) (float64, gonvml.Return) { return 50, gonvml.SUCCESS })
	s := profilingSampler(m)
	for range 3 {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	for _, r := range s.Snapshot().Devices {
		if r.Profiling != nil {
			t.Errorf("%s: profiling on an Ampere GPU: %v", r.UUID, r.Profiling)
		}
	}
	if *polls != 0 {
		t.Errorf("GpmMetricsGet called %d times on Ampere", *polls)
	}
}

// GPM failing mid-run: a lost GPU is dropped and counted; NOT_SUPPORTED
// after a driver change stops GPM on that GPU without touching its duty cycle.
func TestProfilingFailsMidRun(t *testing.T) {
	m := newMockNode(t, 2)
	m.util[0], m.util[1] = 40, 60
	wholeGPM(m, gonvml.DEVICE_ARCH_HOPPER, func(gonvml.GpmMetricId, int) (float64, gonvml.Return) { return 50, gonvml.SUCCESS })
	s := profilingSampler(m)
	for range 3 {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	lost, unsupported := m.dev(0), m.dev(1)
	m.srv.GpmSampleGetFunc = func(d gonvml.Device, _ gonvml.GpmSample) gonvml.Return {
		if d == lost {
			return gonvml.ERROR_GPU_IS_LOST
		}
		return gonvml.ERROR_NOT_SUPPORTED
	}
	s.Poll()
	snap := s.Snapshot()
	if len(snap.Devices) != 1 || snap.Devices[0].UUID != unsupported.UUID {
		t.Fatalf("devices after GPU loss: %d", len(snap.Devices))
	}
	if r := snap.Devices[0]; r.Profiling != nil || r.DutyCycle != 60 {
		t.Errorf("after NOT_SUPPORTED: profiling %v, duty %v (want none, 60)", r.Profiling, r.DutyCycle)
	}
	if s.Errors()["gpu_lost"] != 1 {
		t.Errorf("errors = %v, want gpu_lost 1", s.Errors())
	}
}
