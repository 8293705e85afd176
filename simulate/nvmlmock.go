package simulate

import (
	"fmt"
	"math"
	"sort"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

var models = map[string]gpus.Config{
	"A100-SXM4-40GB":  gpus.A100_SXM4_40GB,
	"A100-SXM4-80GB":  gpus.A100_SXM4_80GB,
	"A100-PCIE-40GB":  gpus.A100_PCIE_40GB,
	"A100-PCIE-80GB":  gpus.A100_PCIE_80GB,
	"A30-PCIE-24GB":   gpus.A30_PCIE_24GB,
	"H100-SXM5-80GB":  gpus.H100_SXM5_80GB,
	"H200-SXM5-141GB": gpus.H200_SXM5_141GB,
	"B200-SXM5-180GB": gpus.B200_SXM5_180GB,
}

// ModelNames lists the GPU models a scenario may name.
func ModelNames() []string {
	out := make([]string, 0, len(models))
	for k := range models {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (n *Node) buildNVML() gonvml.Interface {
	cfg := models[n.scenario.Model]
	cfgs := make([]gpus.Config, n.scenario.GPUs)
	for i := range cfgs {
		cfgs[i] = cfg
	}
	srv := dgxa100.NewWithGPUs(cfgs...)
	n.bus = make([]*nvmltest.Bus, len(srv.Devices))
	for i := range n.bus {
		n.bus[i] = &nvmltest.Bus{}
	}
	for i, d := range srv.Devices {
		i, dev := i, d.(*server.Device)
		dev.UUID = UUID(i)
		dev.PciBusID = fmt.Sprintf("00000000:%02X:00.0", 0x10+i)
		dev.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
			p := gonvml.PciInfo{PciDeviceId: cfg.PciDeviceId, Bus: uint32(0x10 + i)}
			for k := 0; k < len(dev.PciBusID) && k < len(p.BusId)-1; k++ {
				p.BusId[k] = int8(dev.PciBusID[k])
			}
			return p, gonvml.SUCCESS
		}
		dev.GetSamplesFunc = func(typ gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			share := 1.0
			switch typ {
			case gonvml.GPU_UTILIZATION_SAMPLES:
			case gonvml.MEMORY_UTILIZATION_SAMPLES:
				share = memoryShare
			default:
				return 0, nil, gonvml.ERROR_NOT_SUPPORTED
			}
			now := n.now()
			from := now.Add(-nvmlHistory).Truncate(samplePeriod)
			var out []gonvml.Sample
			for t := from; !t.After(now); t = t.Add(samplePeriod) {
				ts := uint64(t.UnixMicro())
				if ts <= last {
					continue
				}
				v := uint32(math.Round(share * n.Utilization(i, t)))
				out = append(out, gonvml.Sample{TimeStamp: ts, SampleValue: nvml.EncodeUint32Sample(v)})
			}
			if len(out) == 0 {
				return gonvml.VALUE_TYPE_UNSIGNED_INT, nil, gonvml.ERROR_NOT_FOUND
			}
			return gonvml.VALUE_TYPE_UNSIGNED_INT, out, gonvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
			u := n.Utilization(i, n.now())
			return gonvml.Utilization{Gpu: uint32(math.Round(u)), Memory: uint32(math.Round(memoryShare * u))}, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			total := dev.MemoryInfo.Total
			used := n.MemoryUsed(i)
			return gonvml.Memory_v2{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
		}
		dev.GetComputeRunningProcessesFunc = n.processes(devKey{i, -1})
		dev.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
			return nil, gonvml.ERROR_NOT_SUPPORTED // time-slicing, not MPS
		}
		dev.GetProcessUtilizationFunc = func(last uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
			now := n.now()
			var out []gonvml.ProcessUtilizationSample
			for t := now.Add(-nvmlHistory).Truncate(samplePeriod); !t.After(now); t = t.Add(samplePeriod) {
				ts := uint64(t.UnixMicro())
				if ts <= last {
					continue
				}
				for _, h := range n.holders[devKey{i, -1}] {
					out = append(out, gonvml.ProcessUtilizationSample{Pid: h.pid, TimeStamp: ts, SmUtil: uint32(math.Round(h.at(t)))})
				}
			}
			if len(out) == 0 {
				return nil, gonvml.ERROR_NOT_FOUND
			}
			return out, gonvml.SUCCESS
		}
		dev.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) {
			total := dev.MemoryInfo.Total
			used := n.MemoryUsed(i)
			return gonvml.Memory{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
		}
		if profiles, ok := n.scenario.MIG[i]; ok {
			n.partition(dev, i, profiles)
		}
		n.applyTelemetry(dev, i)
	}
	n.serveGPM(srv)
	n.serveEvents(srv)
	n.wireBus(srv)
	return srv
}

// processes lists the processes of the containers holding a device.
func (n *Node) processes(k devKey) func() ([]gonvml.ProcessInfo, gonvml.Return) {
	return func() ([]gonvml.ProcessInfo, gonvml.Return) {
		out := make([]gonvml.ProcessInfo, 0, len(n.holders[k]))
		for _, h := range n.holders[k] {
			out = append(out, gonvml.ProcessInfo{Pid: h.pid, UsedGpuMemory: h.memory})
		}
		return out, gonvml.SUCCESS
	}
}

// partition turns MIG on for GPU i and gives it one instance per profile,
// as the driver shows them: own UUID, GPU and compute instance IDs, a name
// ending in the profile, own memory and processes. Per-process utilization
// and v2 memory are not supported on MIG instances, as on real hardware.
func (n *Node) partition(dev *server.Device, i int, profiles []string) {
	dev.MigMode = gonvml.DEVICE_MIG_ENABLE
	migs := make([]gonvml.Device, len(profiles))
	for j, profile := range profiles {
		j, name := j, dev.Config.Name+" MIG "+profile
		total := n.instanceMemory(i, j)
		migs[j] = &mock.Device{
			GetUUIDFunc:              func() (string, gonvml.Return) { return MIGUUID(i, j), gonvml.SUCCESS },
			GetNameFunc:              func() (string, gonvml.Return) { return name, gonvml.SUCCESS },
			GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return MIGInstanceID(j), gonvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				used := n.InstanceMemoryUsed(i, j)
				return gonvml.Memory{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
			},
			GetMemoryInfo_v2Func:           func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NOT_SUPPORTED },
			GetComputeRunningProcessesFunc: n.processes(devKey{i, j}),
			GetMPSComputeRunningProcessesFunc: func() ([]gonvml.ProcessInfo, gonvml.Return) {
				return nil, gonvml.ERROR_NOT_SUPPORTED
			},
			GetProcessUtilizationFunc: func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
				return nil, gonvml.ERROR_NOT_SUPPORTED
			},
		}
	}
	for _, m := range migs {
		n.bus[i].Wire(m.(*mock.Device)) // an instance is lost with its GPU
	}
	if !n.scenario.MIGMonitor {
		// nvml.h, nvmlDeviceGetMemoryInfo: "In MIG mode, if device handle
		// is provided, the API returns aggregate information, only if the
		// caller has appropriate privileges."
		dev.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) { return gonvml.Memory{}, gonvml.ERROR_NO_PERMISSION }
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NO_PERMISSION }
	}
	dev.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 7, gonvml.SUCCESS }
	dev.GetMigDeviceHandleByIndexFunc = func(j int) (gonvml.Device, gonvml.Return) {
		if j < 0 || j >= len(migs) {
			return nil, gonvml.ERROR_NOT_FOUND
		}
		return migs[j], gonvml.SUCCESS
	}
}

// wireBus makes a GPU that fell off the bus answer GPU_IS_LOST on every
// call, its handle lookups included (nvml.h, nvmlDeviceGetHandleByIndex:
// NVML_ERROR_GPU_IS_LOST "if the target GPU has fallen off the bus").
func (n *Node) wireBus(srv *server.Server) {
	for i, d := range srv.Devices {
		n.bus[i].Wire(&d.(*server.Device).Device)
	}
	byIndex := srv.DeviceGetHandleByIndexFunc
	srv.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i >= 0 && i < len(n.bus) && n.bus[i].IsLost() {
			return nil, gonvml.ERROR_GPU_IS_LOST
		}
		return byIndex(i)
	}
	byUUID := srv.DeviceGetHandleByUUIDFunc
	srv.DeviceGetHandleByUUIDFunc = func(uuid string) (gonvml.Device, gonvml.Return) {
		for i := range n.bus {
			if uuid == UUID(i) && n.bus[i].IsLost() {
				return nil, gonvml.ERROR_GPU_IS_LOST
			}
		}
		return byUUID(uuid)
	}
}
