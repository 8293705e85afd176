package nvml

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// fieldIDs are read with one GetFieldValues call per poll: memory
// temperature, the recovery action and the cumulative clock event times.
func fieldIDs() []uint32 {
	ids := []uint32{gonvml.FI_DEV_MEMORY_TEMP, gonvml.FI_DEV_GET_GPU_RECOVERY_ACTION}
	for _, r := range ClockEventReasons {
		if r.Field != 0 {
			ids = append(ids, r.Field)
		}
	}
	return ids
}

// pollTelemetry reads power, energy, temperatures, clocks, clock event
// reasons, memory bandwidth, encoder/decoder and PCIe replays of a whole
// GPU. lost is true when the GPU fell off the bus.
func (s *Sampler) pollTelemetry(d *tracked, r *Reading, nowUS, cutoff uint64) (lost bool) {
	t, h := d.tel, d.h
	out := &r.Telemetry
	var ok bool
	read32 := func(f uint32, get func() (uint32, gonvml.Return), scale float64, into *Value) {
		if lost || !t.on(f) {
			return
		}
		v, ret := get()
		if ok, lost = s.check(t, f, ret); ok {
			*into = val(float64(v) * scale)
		}
	}
	read32(FamilyPower, h.GetPowerUsage, 1e-3, &out.PowerWatts)
	read32(FamilyPowerLimit, h.GetEnforcedPowerLimit, 1e-3, &out.PowerLimitWatts)
	read32(FamilyTemperature, func() (uint32, gonvml.Return) { return h.GetTemperature(gonvml.TEMPERATURE_GPU) }, 1, &out.TempGPU)
	if t.on(FamilyClocks) && !lost {
		read32(FamilyClocks, func() (uint32, gonvml.Return) { return h.GetClockInfo(gonvml.CLOCK_SM) }, 1e6, &out.SMClockHz)
		read32(FamilyClocks, func() (uint32, gonvml.Return) { return h.GetClockInfo(gonvml.CLOCK_MEM) }, 1e6, &out.MemClockHz)
		if !t.maxSM.OK && t.on(FamilyClocks) {
			// Maximum clocks do not change while the driver is loaded.
			read32(FamilyClocks, func() (uint32, gonvml.Return) { return h.GetMaxClockInfo(gonvml.CLOCK_SM) }, 1e6, &t.maxSM)
			read32(FamilyClocks, func() (uint32, gonvml.Return) { return h.GetMaxClockInfo(gonvml.CLOCK_MEM) }, 1e6, &t.maxMem)
		}
		out.SMClockMaxHz, out.MemClockMaxHz = t.maxSM, t.maxMem
	}
	if t.on(FamilyEnergy) && !lost {
		mj, ret := h.GetTotalEnergyConsumption()
		if ok, lost = s.check(t, FamilyEnergy, ret); ok {
			if t.energyStarted && mj < t.lastEnergy {
				// The driver was reloaded and its counter restarted.
				s.countError("energy_counter_reset")
				t.energyBase += t.lastEnergy
			}
			t.lastEnergy, t.energyStarted = mj, true
			out.EnergyJoules = val(float64(t.energyBase+mj) / 1e3)
		}
	}
	if t.on(FamilyClockEvents) && !lost {
		bits, ret := h.GetCurrentClocksEventReasons()
		if ok, lost = s.check(t, FamilyClockEvents, ret); ok {
			out.ClockEvents, out.HasClockEvent = bits, true
		}
	}
	if t.on(FamilyMemoryBandwidth) && !lost {
		lost = s.pollMemoryBandwidth(d, out, nowUS, cutoff)
	}
	encdec := func(f uint32, get func() (uint32, uint32, gonvml.Return), into *Value) {
		if lost || !t.on(f) {
			return
		}
		u, _, ret := get()
		if ok, lost = s.check(t, f, ret); ok && u <= 100 {
			*into = val(float64(u) / 100)
		}
	}
	encdec(FamilyEncoder, h.GetEncoderUtilization, &out.Encoder)
	encdec(FamilyDecoder, h.GetDecoderUtilization, &out.Decoder)
	if t.on(FamilyPCIeReplay) && !lost {
		n, ret := h.GetPcieReplayCounter()
		if ok, lost = s.check(t, FamilyPCIeReplay, ret); ok && n >= 0 {
			out.PCIeReplays = val(float64(n))
		}
	}
	return lost
}

// pollMemoryBandwidth keeps a window of memory-controller utilization
// samples, like the duty cycle's, falling back to the instant rate.
func (s *Sampler) pollMemoryBandwidth(d *tracked, out *Telemetry, nowUS, cutoff uint64) (lost bool) {
	t := d.tel
	if !t.memUseRates {
		vt, samples, ret := d.h.GetSamples(gonvml.MEMORY_UTILIZATION_SAMPLES, t.memWin.last())
		switch ret {
		case gonvml.SUCCESS, gonvml.ERROR_NOT_FOUND:
			for _, smp := range samples {
				if smp.TimeStamp <= cutoff {
					continue
				}
				if v, ok := sampleValue(vt, smp.SampleValue); ok {
					t.memWin.add(smp.TimeStamp, v, cutoff)
				}
			}
		case gonvml.ERROR_NOT_SUPPORTED:
			t.memUseRates = true
		case gonvml.ERROR_GPU_IS_LOST:
			return true
		default:
			s.countError(reason(ret))
		}
	}
	if t.memUseRates {
		u, ret := d.h.GetUtilizationRates()
		ok, lost := s.check(t, FamilyMemoryBandwidth, ret)
		if lost {
			return true
		}
		if ok && u.Memory <= 100 {
			t.memWin.add(nowUS, float64(u.Memory), cutoff)
		}
	}
	t.memWin.trim(cutoff)
	if m, ok := t.memWin.mean(cutoff); ok {
		out.MemoryBandwidth = val(m / 100)
	}
	return false
}

// pollFields reads the field values of a whole GPU in one call; each field
// answers on its own, so an unsupported one turns off only its family.
func (s *Sampler) pollFields(d *tracked, r *Reading) (lost bool) {
	t := d.tel
	wantTemp := s.cfg.Telemetry && t.on(FamilyMemoryTemperature)
	wantRecovery := s.cfg.Health && t.on(FamilyRecoveryAction)
	wantTimes := s.cfg.Telemetry && t.on(FamilyClockEventTime)
	if !wantTemp && !wantRecovery && !wantTimes {
		return false
	}
	if t.fields == nil {
		for _, id := range fieldIDs() {
			t.fields = append(t.fields, gonvml.FieldValue{FieldId: id})
		}
	}
	for i := range t.fields {
		t.fields[i].NvmlReturn, t.fields[i].Value = 0, [8]byte{}
	}
	ret := d.h.GetFieldValues(t.fields)
	if ret != gonvml.SUCCESS {
		_, lost = s.check(t, FamilyMemoryTemperature|FamilyRecoveryAction|FamilyClockEventTime, ret)
		return lost
	}
	r.Telemetry.ClockEventSeconds = make([]Value, len(ClockEventReasons))
	timeSeen := false
	for _, f := range t.fields {
		fret := gonvml.Return(f.NvmlReturn)
		v, vok := decodeValue(gonvml.ValueType(f.ValueType), f.Value)
		switch f.FieldId {
		case gonvml.FI_DEV_MEMORY_TEMP:
			if s.checkField(t, FamilyMemoryTemperature, fret) && vok && wantTemp {
				r.Telemetry.TempMemory = val(v)
			}
		case gonvml.FI_DEV_GET_GPU_RECOVERY_ACTION:
			if s.checkField(t, FamilyRecoveryAction, fret) && vok && wantRecovery {
				r.Health.RecoveryAction = val(v)
			}
		default:
			if fret != gonvml.SUCCESS || !vok || !wantTimes {
				continue
			}
			for i, cr := range ClockEventReasons {
				if cr.Field == f.FieldId {
					r.Telemetry.ClockEventSeconds[i] = val(v / 1e9)
					timeSeen = true
				}
			}
		}
	}
	if !timeSeen {
		// No reason's time is kept by this driver: ask no more.
		t.supported &^= FamilyClockEventTime
		r.Telemetry.ClockEventSeconds = nil
	}
	return false
}

// pollHealth reads ECC counters, retired pages and remapped rows.
func (s *Sampler) pollHealth(d *tracked, r *Reading) (lost bool) {
	t, h := d.tel, d.h
	out := &r.Health
	var ok bool
	if t.on(FamilyECC) && d.eccEnabled {
		for e, et := range []gonvml.MemoryErrorType{gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED} {
			for c, ct := range []gonvml.EccCounterType{gonvml.VOLATILE_ECC, gonvml.AGGREGATE_ECC} {
				if lost || !t.on(FamilyECC) {
					break
				}
				n, ret := h.GetTotalEccErrors(et, ct)
				if ok, lost = s.check(t, FamilyECC, ret); ok {
					out.ECC[e][c] = val(float64(n))
				}
			}
		}
	}
	if t.on(FamilyRemappedRows) && !lost {
		corr, unc, pending, failed, ret := h.GetRemappedRows()
		if ok, lost = s.check(t, FamilyRemappedRows, ret); ok {
			out.RemappedRows = [2]Value{val(float64(corr)), val(float64(unc))}
			out.RemapPending, out.RemapFailed = val(b2f(pending)), val(b2f(failed))
			// Row remapping replaces page retirement (Ampere and newer).
			t.supported &^= FamilyRetiredPages
		}
	}
	if t.on(FamilyRetiredPages) && !lost {
		for i, cause := range []gonvml.PageRetirementCause{gonvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, gonvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR} {
			if lost || !t.on(FamilyRetiredPages) {
				break
			}
			pages, _, ret := h.GetRetiredPages_v2(cause)
			if ok, lost = s.check(t, FamilyRetiredPages, ret); ok {
				out.RetiredPages[i] = val(float64(len(pages)))
			}
		}
		if t.on(FamilyRetiredPages) && !lost {
			st, ret := h.GetRetiredPagesPendingStatus()
			if ok, lost = s.check(t, FamilyRetiredPages, ret); ok {
				out.RetiredPending = val(b2f(st == gonvml.FEATURE_ENABLED))
			}
		}
	}
	return lost
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
