package nvml

import (
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// BenchmarkPollMIG is one poll of a Hopper GPU split into seven MIG
// instances, each running two processes, with per-process data on, with and
// without MIG-monitor privilege; it reports the NVML calls per device (the
// GPU and its instances) and poll.
func BenchmarkPollMIG(b *testing.B) {
	for _, privileged := range []bool{true, false} {
		name := "unprivileged"
		if privileged {
			name = "mig-monitor"
		}
		b.Run(name, func(b *testing.B) {
			n := newGPMNode(b, gonvml.DEVICE_ARCH_HOPPER, true, 1, 2, 3, 4, 5, 6, 7)
			calls := 0
			count := func() { calls++ }
			parent := n.dev(0)
			parent.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
				count()
				if !privileged {
					return gonvml.Memory_v2{}, gonvml.ERROR_NO_PERMISSION
				}
				return gonvml.Memory_v2{Total: 80 << 30, Used: 10 << 30}, gonvml.SUCCESS
			}
			handle, slots := parent.GetMigDeviceHandleByIndexFunc, parent.GetMaxMigDeviceCountFunc
			parent.GetMigDeviceHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) { count(); return handle(i) }
			parent.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { count(); return slots() }
			for k, inst := range n.instances {
				pids := []gonvml.ProcessInfo{{Pid: uint32(100 + 2*k), UsedGpuMemory: 1 << 30}, {Pid: uint32(101 + 2*k), UsedGpuMemory: 1 << 29}}
				mem := inst.GetMemoryInfoFunc
				inst.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) { count(); return mem() }
				inst.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { count(); return pids, gonvml.SUCCESS }
				inst.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { count(); return nil, gonvml.ERROR_NOT_SUPPORTED }
				inst.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
					count()
					return nil, gonvml.ERROR_NOT_SUPPORTED
				}
			}
			sampleGet, metricsGet := n.srv.GpmMigSampleGetFunc, n.srv.GpmMetricsGetFunc
			n.srv.GpmMigSampleGetFunc = func(d gonvml.Device, gi int, s gonvml.GpmSample) gonvml.Return { count(); return sampleGet(d, gi, s) }
			n.srv.GpmMetricsGetFunc = func(m *gonvml.GpmMetricsGetType) gonvml.Return { count(); return metricsGet(m) }
			s := NewSampler(n.srv, Config{Window: time.Minute, Interval: 5 * time.Second, Now: n.clock.Now, Processes: true})
			n.poll(s, 2, 5*time.Second) // discovery, the first GPM sample and the once-only questions
			calls = 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s.Poll()
				n.clock.Advance(5 * time.Second)
			}
			b.StopTimer()
			b.ReportMetric(float64(calls)/float64(b.N)/8, "nvml-calls/device/poll")
		})
	}
}
