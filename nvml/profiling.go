package nvml

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ProfilingMetrics are the GPM metrics read on Hopper and newer, whole GPUs
// and MIG instances alike, each averaged over the duty-cycle window. Scale
// turns NVML's unit into the exposed one: percent into a 0-1 ratio, MiB/s
// into bytes per second.
var ProfilingMetrics = []struct {
	Name  string
	ID    gonvml.GpmMetricId
	Scale float64
}{
	{"sm_active", gonvml.GPM_METRIC_SM_UTIL, 0.01},
	{"sm_occupancy", gonvml.GPM_METRIC_SM_OCCUPANCY, 0.01},
	{"tensor_active", gonvml.GPM_METRIC_ANY_TENSOR_UTIL, 0.01},
	{"dram_active", gonvml.GPM_METRIC_DRAM_BW_UTIL, 0.01},
	{"fp16_active", gonvml.GPM_METRIC_FP16_UTIL, 0.01},
	{"fp32_active", gonvml.GPM_METRIC_FP32_UTIL, 0.01},
	{"fp64_active", gonvml.GPM_METRIC_FP64_UTIL, 0.01},
	{"pcie_tx", gonvml.GPM_METRIC_PCIE_TX_PER_SEC, 1 << 20},
	{"pcie_rx", gonvml.GPM_METRIC_PCIE_RX_PER_SEC, 1 << 20},
	{"nvlink_tx", gonvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, 1 << 20},
	{"nvlink_rx", gonvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, 1 << 20},
}

// Indexes into Reading.Profiling of the metrics the collector attributes
// to containers.
const (
	ProfSMActive = iota
	ProfSMOccupancy
	ProfTensorActive
	ProfDRAMActive
)

// profState is the profiling part of a device's GPM state: a window per
// metric, and which metrics the device answered NOT_SUPPORTED.
type profState struct {
	wins []window
	off  []bool
}

func newProfState() *profState {
	return &profState{wins: make([]window, len(ProfilingMetrics)), off: make([]bool, len(ProfilingMetrics))}
}

// gpmRequest fills the device's reusable GpmMetricsGet request for one
// poll: the MIG duty-cycle metric first on MIG instances, then the
// profiling metrics still supported. It returns where the profiling
// metrics start and which metric each slot holds.
func (g *gpmState) gpmRequest(mig bool) (first int, slots []int) {
	if g.req == nil {
		g.req = &gonvml.GpmMetricsGetType{}
	}
	r := g.req
	r.Version, r.NumMetrics = gonvml.GPM_METRICS_GET_VERSION, 0
	r.Sample1, r.Sample2 = g.prev, g.cur
	add := func(id gonvml.GpmMetricId) {
		r.Metrics[r.NumMetrics] = gonvml.GpmMetric{MetricId: uint32(id)}
		r.NumMetrics++
	}
	if mig {
		add(gpmMetric)
	}
	first = int(r.NumMetrics)
	if g.prof != nil {
		for i, m := range ProfilingMetrics {
			if !g.prof.off[i] {
				add(m.ID)
				slots = append(slots, i)
			}
		}
	}
	return first, slots
}

// takeProfiling adds the profiling values of a GpmMetricsGet answer to
// their windows. A metric answering NOT_SUPPORTED is not asked again until
// rediscovery.
func (s *Sampler) takeProfiling(g *gpmState, first int, slots []int, nowUS, cutoff uint64) {
	for k, i := range slots {
		m := g.req.Metrics[first+k]
		switch ret := gonvml.Return(m.NvmlReturn); {
		case ret == gonvml.ERROR_NOT_SUPPORTED:
			g.prof.off[i] = true
		case ret != gonvml.SUCCESS:
			s.countError(reason(ret))
		case !(m.Value >= 0) || ProfilingMetrics[i].Scale < 1 && m.Value > 100:
			s.countError("value_out_of_range")
		default:
			g.prof.wins[i].add(nowUS, m.Value, cutoff)
		}
	}
}

// profilingOf returns the window means of a device's profiling metrics, or
// nil where GPM does not run.
func profilingOf(g *gpmState, cutoff uint64) []Value {
	if g == nil || g.prof == nil {
		return nil
	}
	out := make([]Value, len(ProfilingMetrics))
	any := false
	for i := range ProfilingMetrics {
		w := &g.prof.wins[i]
		w.trim(cutoff)
		if v, ok := w.mean(cutoff); ok && !g.prof.off[i] {
			out[i] = val(v * ProfilingMetrics[i].Scale)
			any = true
		}
	}
	if !any {
		return nil
	}
	return out
}
