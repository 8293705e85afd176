package simulate

import (
	"fmt"
	"math"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// GPMProfile is what GPU Performance Monitoring sees of a container's
// process, each in percent (0-100) of the process's busy time, its
// utilization: a process at 90 % utilization with smActive 25 keeps the
// SMs 22.5 % active. Unset fields take the defaults of a kernel that
// fills the GPU reasonably well (see resolve).
type GPMProfile struct {
	SMActive     *float64 `yaml:"smActive"`
	SMOccupancy  *float64 `yaml:"smOccupancy"`
	TensorActive *float64 `yaml:"tensorActive"`
	DRAMActive   *float64 `yaml:"dramActive"`
}

// Defaults of GPMProfile, in percent of the busy time. Occupancy and
// tensor activity follow SM activity: neither can exceed it.
const (
	defaultSMActive       = 85
	defaultOccupancyShare = 0.5
	defaultTensorShare    = 0.6
)

// gpmRates are a holder's resolved GPMProfile as fractions of its
// utilization.
type gpmRates struct{ sm, occupancy, tensor, dram float64 }

func (p GPMProfile) resolve() gpmRates {
	get := func(v *float64, def float64) float64 {
		if v != nil {
			return *v / 100
		}
		return def
	}
	sm := get(p.SMActive, defaultSMActive/100.0)
	return gpmRates{
		sm:        sm,
		occupancy: get(p.SMOccupancy, sm*defaultOccupancyShare),
		tensor:    get(p.TensorActive, sm*defaultTensorShare),
		dram:      get(p.DRAMActive, memoryShare), // as the memory utilization
	}
}

// validate checks the profile's ranges: percentages, and occupancy and
// tensor activity within SM activity, as on hardware.
func (p GPMProfile) validate(path string, bad func(path, format string, args ...any)) {
	for _, f := range []struct {
		name string
		v    *float64
	}{{"smActive", p.SMActive}, {"smOccupancy", p.SMOccupancy}, {"tensorActive", p.TensorActive}, {"dramActive", p.DRAMActive}} {
		// Written so that NaN fails the comparison and is refused.
		if f.v != nil && !(*f.v >= 0 && *f.v <= 100) {
			bad(path+"."+f.name, "%v is out of range 0-100", *f.v)
		}
	}
	r := p.resolve()
	if r.occupancy > r.sm {
		bad(path+".smOccupancy", "%s is above smActive %s: warps are resident only on active SMs", pct(r.occupancy), pct(r.sm))
	}
	if r.tensor > r.sm {
		bad(path+".tensorActive", "%s is above smActive %s: tensor cores are part of the SMs", pct(r.tensor), pct(r.sm))
	}
}

func pct(f float64) string { return fmt.Sprintf("%g", f*100) }

// Shares of a device's SM activity spent in each floating-point pipe, and
// the PCIe and NVLink traffic (MiB/s) per percent of load: a mixed
// precision workload's plausible mix.
const (
	fp16Share, fp32Share, fp64Share = 0.4, 0.3, 0.01
	pcieRxPerPercent                = 80   // ~8 GB/s at full DRAM use
	pcieTxPerPercent                = 20   // results back to the host
	pcieIdleMiBs                    = 50   // driver and monitoring traffic
	nvlinkPerPercent                = 1500 // ~150 GB/s all-reduce at full use
)

// gpmAt is a device's GPM metric at t, in NVML's unit; ok is false where
// the simulated driver does not report it. A whole GPU's values are the
// sums over its holders' processes, so that what the exporter attributes
// to each sharer is checkable; a MIG-enabled GPU's are its instances'
// weighted by their slices.
func (n *Node) gpmAt(k devKey, id gonvml.GpmMetricId, t time.Time) (float64, bool) {
	if profiles, ok := n.scenario.MIG[k.GPU]; ok && k.MIG < 0 {
		all := migProfiles(n.scenario.Model)
		var sum float64
		for j, name := range profiles {
			v, ok := n.gpmAt(devKey{k.GPU, j}, id, t)
			if !ok {
				return 0, false
			}
			sum += v * float64(all[name].Slices) / 7
		}
		return sum, true
	}
	var sm, occ, tensor, dram, nvlink float64
	for _, h := range n.holders[k] {
		u := h.at(t)
		sm += u * h.gpm.sm
		occ += u * h.gpm.occupancy
		tensor += u * h.gpm.tensor
		dram += u * h.gpm.dram
		if h.spread {
			nvlink += u * nvlinkPerPercent
		}
	}
	ratio := func(v float64) (float64, bool) { return math.Min(100, v), true }
	switch id {
	case gonvml.GPM_METRIC_GRAPHICS_UTIL:
		return math.Round(n.utilization(k, t)), true
	case gonvml.GPM_METRIC_SM_UTIL:
		return ratio(sm)
	case gonvml.GPM_METRIC_SM_OCCUPANCY:
		return ratio(occ)
	case gonvml.GPM_METRIC_ANY_TENSOR_UTIL:
		return ratio(tensor)
	case gonvml.GPM_METRIC_DRAM_BW_UTIL:
		return ratio(dram)
	case gonvml.GPM_METRIC_FP16_UTIL:
		return ratio(sm * fp16Share)
	case gonvml.GPM_METRIC_FP32_UTIL:
		return ratio(sm * fp32Share)
	case gonvml.GPM_METRIC_FP64_UTIL:
		return ratio(sm * fp64Share)
	}
	if k.MIG >= 0 {
		return 0, false // PCIe and NVLink belong to the whole GPU
	}
	switch id {
	case gonvml.GPM_METRIC_PCIE_RX_PER_SEC:
		return pcieIdleMiBs + pcieRxPerPercent*math.Min(100, dram), true
	case gonvml.GPM_METRIC_PCIE_TX_PER_SEC:
		return pcieIdleMiBs + pcieTxPerPercent*math.Min(100, dram), true
	case gonvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, gonvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC:
		return nvlink, true
	}
	return 0, false
}

// GPM is a device's GPM metric between two samples taken at from and to:
// the mean over the simulated driver's one-second samples in (from, to],
// the value at to when the interval holds none. mig is -1 for a whole GPU.
func (n *Node) GPM(gpu, mig int, id gonvml.GpmMetricId, from, to time.Time) (float64, bool) {
	k := devKey{gpu, mig}
	var sum float64
	var count int
	for t := from.Truncate(samplePeriod).Add(samplePeriod); !t.After(to); t = t.Add(samplePeriod) {
		v, ok := n.gpmAt(k, id, t)
		if !ok {
			return 0, false
		}
		sum += v
		count++
	}
	if count == 0 {
		return n.gpmAt(k, id, to)
	}
	return sum / float64(count), true
}

// meanUtilization is a device's mean utilization over its one-second
// samples in (from, to], which GPM reports as GRAPHICS_UTIL.
func (n *Node) meanUtilization(k devKey, from, to time.Time) float64 {
	v, _ := n.GPM(k.GPU, k.MIG, gonvml.GPM_METRIC_GRAPHICS_UTIL, from, to)
	return v
}

// gpmSample is what a simulated GPM sample records: which device, when.
type gpmSample struct {
	key devKey
	at  time.Time
}

// serveGPM serves GPU Performance Monitoring as the driver does: supported
// from Hopper on, for whole GPUs (GpmSampleGet) and MIG instances
// (GpmMigSampleGet); a sample records its device and time, and
// GpmMetricsGet answers each metric with its mean between two samples.
func (n *Node) serveGPM(srv *server.Server) {
	var mu sync.Mutex
	samples := map[gonvml.GpmSample]*gpmSample{}
	gpuIndex := func(d gonvml.Device) int {
		for i, dev := range srv.Devices {
			if dev == d {
				return i
			}
		}
		return -1
	}
	supported := func(d gonvml.Device) bool {
		arch, ret := d.GetArchitecture()
		return ret == gonvml.SUCCESS && arch >= gonvml.DEVICE_ARCH_HOPPER
	}
	srv.GpmQueryDeviceSupportFunc = func(d gonvml.Device) (gonvml.GpmSupport, gonvml.Return) {
		if _, ret := d.GetArchitecture(); ret != gonvml.SUCCESS {
			return gonvml.GpmSupport{}, ret
		}
		sup := gonvml.GpmSupport{Version: gonvml.GPM_SUPPORT_VERSION}
		if supported(d) {
			sup.IsSupportedDevice = 1
		}
		return sup, gonvml.SUCCESS
	}
	srv.GpmSampleAllocFunc = func() (gonvml.GpmSample, gonvml.Return) {
		s := &mock.GpmSample{}
		mu.Lock()
		samples[s] = &gpmSample{key: devKey{-1, -1}}
		mu.Unlock()
		return s, gonvml.SUCCESS
	}
	srv.GpmSampleFreeFunc = func(s gonvml.GpmSample) gonvml.Return {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := samples[s]; !ok {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		delete(samples, s)
		return gonvml.SUCCESS
	}
	record := func(s gonvml.GpmSample, k devKey) gonvml.Return {
		mu.Lock()
		defer mu.Unlock()
		smp, ok := samples[s]
		if !ok {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		smp.key, smp.at = k, n.now()
		return gonvml.SUCCESS
	}
	srv.GpmSampleGetFunc = func(d gonvml.Device, s gonvml.GpmSample) gonvml.Return {
		i := gpuIndex(d)
		if i < 0 {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		if !supported(d) {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		return record(s, devKey{i, -1})
	}
	srv.GpmMigSampleGetFunc = func(d gonvml.Device, gi int, s gonvml.GpmSample) gonvml.Return {
		i := gpuIndex(d)
		j := gi - 1
		if i < 0 || j < 0 || j >= len(n.scenario.MIG[i]) {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		if !supported(d) {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		return record(s, devKey{i, j})
	}
	srv.GpmMetricsGetFunc = func(m *gonvml.GpmMetricsGetType) gonvml.Return {
		mu.Lock()
		s1, ok1 := samples[m.Sample1]
		s2, ok2 := samples[m.Sample2]
		mu.Unlock()
		if !ok1 || !ok2 || s1.key != s2.key || s1.key.GPU < 0 || s2.at.Before(s1.at) {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		for k := 0; k < int(m.NumMetrics) && k < len(m.Metrics); k++ {
			v, ok := n.GPM(s1.key.GPU, s1.key.MIG, gonvml.GpmMetricId(m.Metrics[k].MetricId), s1.at, s2.at)
			if !ok {
				m.Metrics[k].NvmlReturn = uint32(gonvml.ERROR_NOT_SUPPORTED)
				continue
			}
			m.Metrics[k].Value = v
			m.Metrics[k].NvmlReturn = uint32(gonvml.SUCCESS)
		}
		return gonvml.SUCCESS
	}
}
