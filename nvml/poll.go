package nvml

import gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

// pollDevice reads one device; ok is false when the device is lost.
func (s *Sampler) pollDevice(d *tracked, nowUS, cutoff uint64) (Reading, bool) {
	r := Reading{DeviceInfo: d.info}
	if !d.noUtil {
		poll := s.pollUtilization
		if d.gpm != nil && !d.gpm.whole {
			poll = s.pollGPM
		}
		if ret := poll(d, nowUS, cutoff); ret == gonvml.ERROR_GPU_IS_LOST {
			return s.lose(d)
		}
		d.win.trim(cutoff)
		r.DutyCycle, r.HasDutyCycle = d.win.mean(cutoff)
	}
	if s.cfg.Processes && !d.info.MIGEnabled {
		if ret := s.pollProcesses(d, &r, nowUS, cutoff); ret == gonvml.ERROR_GPU_IS_LOST {
			return s.lose(d)
		}
	}
	if d.gpm != nil && d.gpm.whole {
		if ret := s.pollGPM(d, nowUS, cutoff); ret == gonvml.ERROR_GPU_IS_LOST {
			return s.lose(d)
		}
	}
	r.Profiling = profilingOf(d.gpm, cutoff)
	if d.tel != nil {
		if lost := s.pollWhole(d, &r, nowUS, cutoff); lost {
			return s.lose(d)
		}
	}
	if d.info.IsMIG() && s.cfg.Events && s.events.set != nil {
		r.Xid, r.LastXid = s.xidOf(&d.info) // events naming the instance
	}
	if d.memDerived {
		return r, true // summed from its instances by deriveMIGMemory
	}
	used, total, ret := s.memory(d)
	switch ret {
	case gonvml.SUCCESS:
		r.MemoryUsed, r.HasMemory = used, true
		if total > 0 {
			// Remembered, so a later failed read loses only the used bytes.
			d.info.MemoryTotal, r.MemoryTotal = total, total
		}
	case gonvml.ERROR_GPU_IS_LOST:
		return s.lose(d)
	case gonvml.ERROR_NO_PERMISSION:
		if d.info.MIGEnabled {
			// nvml.h, nvmlDeviceGetMemoryInfo: "In MIG mode, if device
			// handle is provided, the API returns aggregate information,
			// only if the caller has appropriate privileges." Asked once.
			d.memDerived = true
			s.countError(reason(ret))
			s.log.Info("memory of a MIG-enabled GPU needs MIG-monitor privilege; serving the sum of its instances'", "gpu_id", d.info.UUID)
			return r, true
		}
		s.countError(reason(ret))
	default:
		s.countError(reason(ret))
		if d.info.IsMIG() {
			s.rediscover = true // a destroyed instance's handle fails
		}
	}
	return r, true
}

// deriveMIGMemory gives each MIG-enabled GPU whose own memory NVML
// withholds the sum of its instances' used and total memory. The total is
// what the instances hold, a little less than the board's.
func deriveMIGMemory(devices []*tracked, readings []Reading) {
	byParent := map[string]*Reading{}
	for i, d := range devices {
		if d.memDerived {
			r := &readings[i]
			r.MemoryUsed, r.MemoryTotal, r.HasMemory = 0, 0, true
			byParent[d.info.UUID] = r
		}
	}
	if len(byParent) == 0 {
		return
	}
	for i := range readings {
		in := &readings[i]
		if p := byParent[in.ParentUUID]; p != nil {
			// An instance unread this poll: no used sum rather than a short one.
			p.HasMemory = p.HasMemory && in.HasMemory
			p.MemoryUsed += in.MemoryUsed
			p.MemoryTotal += in.MemoryTotal
		}
	}
}

func (s *Sampler) lose(d *tracked) (Reading, bool) {
	s.countError("gpu_lost")
	s.log.Error("GPU lost; dropping its series", "gpu_id", d.info.UUID)
	d.lost = true
	s.freeGPM(d)
	return Reading{}, false
}

// pollUtilization appends new utilization samples to the device's window.
func (s *Sampler) pollUtilization(d *tracked, nowUS, cutoff uint64) gonvml.Return {
	if !d.useRates {
		vt, samples, ret := d.h.GetSamples(gonvml.GPU_UTILIZATION_SAMPLES, d.win.last())
		switch ret {
		case gonvml.SUCCESS:
			for _, smp := range samples {
				if smp.TimeStamp <= cutoff {
					continue
				}
				v, ok := sampleValue(vt, smp.SampleValue)
				if !ok {
					s.countError("value_out_of_range")
					continue
				}
				d.win.add(smp.TimeStamp, v, cutoff)
			}
			return ret
		case gonvml.ERROR_NOT_FOUND:
			return gonvml.SUCCESS // no new samples since the last poll
		case gonvml.ERROR_NOT_SUPPORTED:
			s.log.Info("utilization samples not supported; falling back to utilization rates", "gpu_id", d.info.UUID)
			d.useRates = true
		case gonvml.ERROR_GPU_IS_LOST:
			return ret // counted once, by lose
		default:
			s.countError(reason(ret))
			return ret
		}
	}
	u, ret := d.h.GetUtilizationRates()
	switch ret {
	case gonvml.SUCCESS:
		if u.Gpu > 100 {
			s.countError("value_out_of_range")
			return ret
		}
		d.win.add(nowUS, float64(u.Gpu), cutoff)
	case gonvml.ERROR_NOT_SUPPORTED:
		s.log.Info("GPU utilization not supported by this device", "gpu_id", d.info.UUID)
		d.noUtil = true
	case gonvml.ERROR_GPU_IS_LOST:
		// counted once, by lose
	default:
		s.countError(reason(ret))
	}
	return ret
}

// memory reads used and total bytes, preferring the v2 call whose "used"
// excludes memory the driver reserves.
func (s *Sampler) memory(d *tracked) (used, total uint64, ret gonvml.Return) {
	if !d.memV1 {
		m, ret := d.h.GetMemoryInfo_v2()
		switch ret {
		case gonvml.SUCCESS:
			return m.Used, m.Total, ret
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND, gonvml.ERROR_ARGUMENT_VERSION_MISMATCH:
			d.memV1 = true
		default:
			return 0, 0, ret
		}
	}
	m, ret := d.h.GetMemoryInfo()
	return m.Used, m.Total, ret
}

// pollWhole reads the telemetry, health and Xid counts of a whole GPU, as
// far as they are switched on and supported.
func (s *Sampler) pollWhole(d *tracked, r *Reading, nowUS, cutoff uint64) (lost bool) {
	if s.cfg.Telemetry && s.pollTelemetry(d, r, nowUS, cutoff) {
		return true
	}
	if s.pollFields(d, r) {
		return true
	}
	if s.cfg.Health && s.pollHealth(d, r) {
		return true
	}
	if s.cfg.Events && d.tel.on(FamilyXid) && s.events.set != nil {
		r.Xid, r.LastXid = s.xidOf(&d.info)
	}
	r.Supported = d.tel.supported & s.wanted()
	if d.gpm != nil && d.gpm.prof != nil {
		r.Supported |= FamilyGPM
	}
	if !s.cfg.Events || s.events.set == nil {
		r.Supported &^= FamilyXid
	}
	return false
}

// wanted is the Family bits of the groups switched on.
func (s *Sampler) wanted() uint32 {
	var w uint32
	if s.cfg.Telemetry {
		w |= FamilyPower | FamilyPowerLimit | FamilyEnergy | FamilyTemperature | FamilyMemoryTemperature |
			FamilyClocks | FamilyClockEvents | FamilyClockEventTime | FamilyMemoryBandwidth |
			FamilyEncoder | FamilyDecoder | FamilyPCIeReplay
	}
	if s.cfg.Health {
		w |= FamilyECC | FamilyRetiredPages | FamilyRemappedRows | FamilyRecoveryAction
	}
	if s.cfg.Events {
		w |= FamilyXid
	}
	return w
}
