package nvml

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// gpmMetric is the GPM metric reported as a MIG instance's duty cycle:
// the percentage of time the instance's graphics/compute engine was busy,
// the same notion as a whole GPU's utilization samples (nvidia-smi's
// utilization.gpu, DCGM's GR_ENGINE_ACTIVE), rather than SM occupancy.
const gpmMetric = gonvml.GPM_METRIC_GRAPHICS_UTIL

// gpmState is the GPM history of one MIG instance: NVML computes a GPM
// metric between two samples, so each poll takes a new sample into cur and
// measures from prev, then the two swap. Both buffers are allocated once and
// reused for the instance's lifetime.
type gpmState struct {
	prev, cur gonvml.GpmSample
	havePrev  bool
}

// gpmSupported reports whether GPM can measure the MIG instances of a
// MIG-enabled GPU. GPM exists from Hopper on, so older architectures are
// not asked; newer or unknown ones are asked through GpmQueryDeviceSupport.
func (s *Sampler) gpmSupported(parent gonvml.Device) bool {
	if arch, ret := parent.GetArchitecture(); ret == gonvml.SUCCESS && arch < gonvml.DEVICE_ARCH_HOPPER {
		return false
	}
	sup, ret := s.lib.GpmQueryDeviceSupport(parent)
	return ret == gonvml.SUCCESS && sup.IsSupportedDevice != 0
}

// pollGPM takes a GPM sample of a MIG instance through its parent GPU and,
// from the second poll on, adds the busy percentage since the previous
// sample to the instance's window, stamped with the poll time. Polls are
// evenly spaced, so the window's mean is the busy share of the window.
// Where GPM turns out not to work the instance falls back to no duty cycle,
// once, with a log line.
func (s *Sampler) pollGPM(d *tracked, nowUS, cutoff uint64) gonvml.Return {
	g := d.gpm
	if g.cur == nil {
		if !s.allocGPM(d) {
			return gonvml.SUCCESS
		}
	}
	ret := s.lib.GpmMigSampleGet(d.parent, d.info.GPUInstance, g.cur)
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
		s.log.Info("GPM not supported for this MIG instance; it has no duty cycle", "gpu_id", d.info.UUID)
		s.stopGPM(d)
		return gonvml.SUCCESS
	case gonvml.ERROR_GPU_IS_LOST:
		return ret
	default:
		// The instance may have been destroyed: look at the layout again.
		s.countError(reason(ret))
		s.rediscover = true
		return ret
	}
	if g.havePrev {
		m := &gonvml.GpmMetricsGetType{NumMetrics: 1, Sample1: g.prev, Sample2: g.cur}
		m.Metrics[0].MetricId = uint32(gpmMetric)
		ret := s.lib.GpmMetricsGet(m)
		if ret == gonvml.SUCCESS && gonvml.Return(m.Metrics[0].NvmlReturn) != gonvml.SUCCESS {
			ret = gonvml.Return(m.Metrics[0].NvmlReturn)
		}
		switch v := m.Metrics[0].Value; {
		case ret != gonvml.SUCCESS:
			s.countError(reason(ret))
		case !(v >= 0 && v <= 100):
			s.countError("value_out_of_range")
		default:
			d.win.add(nowUS, v, cutoff)
		}
	}
	g.prev, g.cur = g.cur, g.prev
	g.havePrev = true
	return gonvml.SUCCESS
}

// allocGPM allocates the instance's two sample buffers; on failure the
// instance goes without a duty cycle.
func (s *Sampler) allocGPM(d *tracked) bool {
	a, ret := s.lib.GpmSampleAlloc()
	if ret != gonvml.SUCCESS {
		s.countError(reason(ret))
		s.log.Warn("GPM sample allocation failed; MIG instance has no duty cycle", "gpu_id", d.info.UUID, "err", reason(ret))
		s.stopGPM(d)
		return false
	}
	b, ret := s.lib.GpmSampleAlloc()
	if ret != gonvml.SUCCESS {
		_ = s.lib.GpmSampleFree(a) // a failed free leaves nothing to retry
		s.countError(reason(ret))
		s.log.Warn("GPM sample allocation failed; MIG instance has no duty cycle", "gpu_id", d.info.UUID, "err", reason(ret))
		s.stopGPM(d)
		return false
	}
	d.gpm.prev, d.gpm.cur = a, b
	return true
}

// stopGPM frees an instance's GPM buffers and leaves it without a duty cycle.
func (s *Sampler) stopGPM(d *tracked) {
	s.freeGPM(d)
	d.gpm = nil
	d.noUtil = true
}

// freeGPM returns an instance's GPM buffers to NVML; they are C memory the
// garbage collector does not see.
func (s *Sampler) freeGPM(d *tracked) {
	if d.gpm == nil {
		return
	}
	for _, smp := range []gonvml.GpmSample{d.gpm.prev, d.gpm.cur} {
		if smp != nil {
			_ = s.lib.GpmSampleFree(smp) // a failed free leaves nothing to retry
		}
	}
	d.gpm.prev, d.gpm.cur, d.gpm.havePrev = nil, nil, false
}
