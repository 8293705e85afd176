package nvml

import (
	"fmt"
	"sort"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

func (s *Sampler) init() error {
	if ret := s.lib.Init(); ret != gonvml.SUCCESS {
		s.countError("init")
		err := fmt.Errorf("NVML init: %s", reason(ret))
		if !s.initLogged {
			s.log.Warn("NVML unavailable, serving no GPU devices; retrying", "err", err, "retry_interval", s.cfg.RetryInterval)
			s.initLogged = true
		}
		return err
	}
	s.inited = true
	if s.initLogged {
		s.log.Info("NVML initialised after earlier failures")
	}
	s.initLogged = false
	return nil
}

// discover enumerates GPUs and MIG instances, keeping the sample history of
// devices already known.
func (s *Sampler) discover() {
	old := make(map[string]*tracked, len(s.devices))
	for _, d := range s.devices {
		old[d.info.UUID] = d
	}
	count, ret := s.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		s.countError(reason(ret))
		s.log.Warn("NVML device count failed", "err", reason(ret))
		return
	}
	var found []*tracked
	keep := func(t *tracked) {
		// A GPU whose MIG mode changed starts afresh: its utilization
		// source is not the same.
		if prev, ok := old[t.info.UUID]; ok && prev.info.MIGEnabled == t.info.MIGEnabled {
			gpm := t.gpm
			t.win, t.useRates, t.noUtil, t.memV1, t.memDerived = prev.win, prev.useRates, prev.noUtil, prev.memV1, prev.memDerived
			t.procs, t.lastProcTS, t.procReason, t.utilReason, t.noMPSListed = prev.procs, prev.lastProcTS, prev.procReason, prev.utilReason, prev.noMPSListed
			if t.tel != nil && prev.tel != nil {
				// Energy and windows carry over; families that answered
				// NOT_SUPPORTED are asked again after a rediscovery.
				tel := *prev.tel
				tel.supported = t.tel.supported
				t.tel = &tel
			}
			switch {
			case gpm != nil && prev.gpm != nil:
				t.gpm = prev.gpm // keep the previous sample: no gap in the duty cycle
			case gpm == nil && prev.gpm != nil:
				s.freeGPM(prev)
				if !prev.gpm.whole {
					t.noUtil = true
				}
			}
			delete(old, t.info.UUID)
		}
		found = append(found, t)
	}
	for i := 0; i < count; i++ {
		h, ret := s.lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			s.countError(reason(ret))
			continue
		}
		gpu, err := describe(h, i)
		if err != nil {
			s.countError(reasonOf(err))
			s.log.Warn("skipping GPU", "index", i, "err", err)
			continue
		}
		if s.cfg.Telemetry || s.cfg.Health || s.cfg.Events {
			gpu.tel = newTelemetryState()
			if s.cfg.Health {
				cur, _, ret := h.GetEccMode()
				gpu.eccEnabled = ret == gonvml.SUCCESS && cur == gonvml.FEATURE_ENABLED
				if !gpu.eccEnabled {
					gpu.tel.supported &^= FamilyECC
				}
			}
		}
		if mode, _, ret := h.GetMigMode(); ret == gonvml.SUCCESS && mode == gonvml.DEVICE_MIG_ENABLE {
			gpu.info.MIGEnabled = true
			gpu.noUtil = true // NVML reports no utilization on MIG-enabled GPUs
			keep(gpu)
			for _, mig := range s.discoverMIG(gpu, s.gpmSupported(h)) {
				keep(mig)
			}
			continue
		}
		if s.cfg.Profiling && s.gpmSupported(h) {
			// Whole GPUs keep their duty cycle from utilization samples;
			// GPM adds the profiling metrics.
			gpu.gpm = &gpmState{whole: true, prof: newProfState()}
		}
		keep(gpu)
	}
	sort.SliceStable(found, func(a, b int) bool { return found[a].info.Index < found[b].info.Index })
	for _, gone := range old {
		s.freeGPM(gone) // destroyed MIG instances, GPUs gone
	}
	s.devices = found
	for _, d := range found {
		delete(s.lost, d.info.UUID) // back on the bus
	}
	if s.cfg.Events {
		s.registerEvents()
	}
}

// discoverMIG lists the MIG instances of a MIG-enabled GPU. With gpm, each
// instance's duty cycle comes from GPM samples; without, it has none (NVML's
// utilization samples do not exist per MIG instance).
func (s *Sampler) discoverMIG(parent *tracked, gpm bool) []*tracked {
	max, ret := parent.h.GetMaxMigDeviceCount()
	if ret != gonvml.SUCCESS {
		s.countError(reason(ret))
		return nil
	}
	parent.migSlots = max
	var out []*tracked
	for j := 0; j < max; j++ {
		h, ret := parent.h.GetMigDeviceHandleByIndex(j)
		if ret == gonvml.ERROR_NOT_FOUND || ret == gonvml.ERROR_INVALID_ARGUMENT {
			continue // empty slot
		}
		if ret != gonvml.SUCCESS {
			s.countError(reason(ret))
			continue
		}
		uuid, ret := h.GetUUID()
		if ret != gonvml.SUCCESS {
			s.countError(reason(ret))
			continue
		}
		info := parent.info
		info.UUID, info.ParentUUID, info.MIGEnabled = uuid, parent.info.UUID, false
		info.GPUInstance, info.ComputeInstance = -1, -1
		if gi, ret := h.GetGpuInstanceId(); ret == gonvml.SUCCESS {
			info.GPUInstance = gi
		}
		if ci, ret := h.GetComputeInstanceId(); ret == gonvml.SUCCESS {
			info.ComputeInstance = ci
		}
		if name, ret := h.GetName(); ret == gonvml.SUCCESS {
			info.Profile = migProfile(name)
		}
		if mem, ret := h.GetMemoryInfo(); ret == gonvml.SUCCESS {
			info.MemoryTotal = mem.Total
		}
		t := &tracked{info: info, h: h, noUtil: true, memV1: true, parent: parent.h}
		if gpm && info.GPUInstance >= 0 {
			t.noUtil, t.gpm = false, &gpmState{}
			if s.cfg.Profiling {
				t.gpm.prof = newProfState()
			}
		}
		out = append(out, t)
	}
	return out
}

// describe reads the static facts of a GPU.
func describe(h gonvml.Device, index int) (*tracked, error) {
	info := DeviceInfo{Index: index, Minor: -1, GPUInstance: -1, ComputeInstance: -1}
	var ret gonvml.Return
	if info.UUID, ret = h.GetUUID(); ret != gonvml.SUCCESS {
		return nil, nvmlError{"uuid", ret}
	}
	if info.Name, ret = h.GetName(); ret != gonvml.SUCCESS {
		return nil, nvmlError{"name", ret}
	}
	if idx, ret := h.GetIndex(); ret == gonvml.SUCCESS {
		info.Index = idx
	}
	if minor, ret := h.GetMinorNumber(); ret == gonvml.SUCCESS {
		info.Minor = minor
	}
	if pci, ret := h.GetPciInfo(); ret == gonvml.SUCCESS {
		info.PCIBusID = busID(pci.BusId)
	}
	return &tracked{info: info, h: h}, nil
}

// layoutChanged tells, between discoveries, whether MIG was turned on or off
// on a GPU or instances were created or destroyed on a MIG-enabled one, so
// that a MIG reconfiguration shows at the next poll rather than up to
// RediscoverInterval later. It costs one GetMigMode per GPU, plus one handle
// and one UUID lookup per instance slot of MIG-enabled GPUs: no hardware
// access, only the driver's bookkeeping.
func (s *Sampler) layoutChanged() bool {
	instances := map[string]map[string]bool{}
	for _, d := range s.devices {
		if d.info.IsMIG() {
			if instances[d.info.ParentUUID] == nil {
				instances[d.info.ParentUUID] = map[string]bool{}
			}
			instances[d.info.ParentUUID][d.info.UUID] = true
		}
	}
	for _, d := range s.devices {
		if d.info.IsMIG() {
			continue
		}
		mode, _, ret := d.h.GetMigMode()
		if ret != gonvml.SUCCESS {
			continue // not MIG-capable, or not answering: the device's own reads will tell
		}
		if enabled := mode == gonvml.DEVICE_MIG_ENABLE; enabled != d.info.MIGEnabled {
			return true
		}
		if !d.info.MIGEnabled {
			continue
		}
		known, seen := instances[d.info.UUID], 0
		for j := 0; j < d.migSlots; j++ {
			h, ret := d.h.GetMigDeviceHandleByIndex(j)
			if ret != gonvml.SUCCESS {
				continue
			}
			uuid, ret := h.GetUUID()
			if ret != gonvml.SUCCESS || !known[uuid] {
				return true
			}
			seen++
		}
		if seen != len(known) {
			return true
		}
	}
	return false
}
