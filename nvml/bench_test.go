package nvml

import (
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
)

// BenchmarkPoll is one poll of 8 Hopper GPUs with each group of families
// switched on, and reports the NVML calls per device and poll.
func BenchmarkPoll(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"duty-memory", Config{}},
		{"telemetry-health-events", Config{Telemetry: true, Health: true, Events: true}},
		{"all-with-gpm", Config{Telemetry: true, Health: true, Events: true, Profiling: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := newMockNode(b, 8)
			var calls atomic.Uint64
			var energy nvmltest.EnergyCounter
			for i := range 8 {
				m.dev(i).GetSamplesFunc = countSamples(&calls, m.dev(i).GetSamplesFunc)
				mem := m.dev(i).GetMemoryInfo_v2Func
				m.dev(i).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { calls.Add(1); return mem() }
				p := h100Profile(&energy)
				p.Calls = &calls
				nvmltest.Apply(&m.dev(i).Device, p)
			}
			gpm := wholeGPM(m, gonvml.DEVICE_ARCH_HOPPER, func(gonvml.GpmMetricId, int) (float64, gonvml.Return) { return 40, gonvml.SUCCESS })
			sampleGet := m.srv.GpmSampleGetFunc
			m.srv.GpmSampleGetFunc = func(d gonvml.Device, s gonvml.GpmSample) gonvml.Return { calls.Add(1); return sampleGet(d, s) }
			ev := &nvmltest.Events{}
			ev.Install(&m.srv.Interface)
			cfg := c.cfg
			cfg.Window, cfg.Interval, cfg.Now = time.Minute, 2*time.Second, m.clock.Now
			s := NewSampler(m.srv, cfg)
			s.Poll() // discovery
			m.clock.Advance(2 * time.Second)
			calls.Store(0)
			*gpm = 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s.Poll()
			}
			b.StopTimer()
			b.ReportMetric(float64(calls.Load()+uint64(*gpm))/float64(b.N)/8, "nvml-calls/device/poll")
		})
	}
}

func countSamples(calls *atomic.Uint64, f func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return)) func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
	return func(t gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
		calls.Add(1)
		return f(t, last)
	}
}
