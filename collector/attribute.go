package collector

import (
	"errors"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// attribute splits shared devices among their holders from per-process
// data, and collects use no holder accounts for. Exclusive devices keep the
// device-wide numbers Join already put in their Usage.
func attribute(v *View, in Inputs) {
	holders := map[string][]int{} // device UUID -> indexes into v.Usage
	for i, u := range v.Usage {
		holders[u.Device.UUID] = append(holders[u.Device.UUID], i)
	}
	var lookup PodLookup
	if in.Specs != nil {
		lookup = in.Specs.Lookup
	}
	global := in.NoAttribution
	if global == "" && lookup == nil {
		global = "no_kubernetes_api"
	}
	for i := range v.Devices {
		d := &v.Devices[i]
		idx := holders[d.UUID]
		canSplit := global == "" && d.ProcessesOK
		if len(idx) > 0 {
			a := Attribution{Device: d, Mode: "exclusive"}
			if len(idx) == 1 {
				v.Usage[idx[0]].Share, v.Usage[idx[0]].HasShare = 1, true
			}
			if len(idx) > 1 {
				a.Mode = "per_process"
				switch {
				case global != "":
					a.Mode, a.Reason = "device", global
				case !d.ProcessesOK:
					a.Mode, a.Reason = "device", d.ProcessesReason
					if a.Reason == "" {
						a.Reason = "no_process_data"
					}
				case d.UtilReason != "":
					// MIG instances: processes and their memory, no
					// per-process utilization.
					a.Mode, a.Reason = "per_process_memory", d.UtilReason
				}
			}
			if a.Mode == "per_process" || a.Mode == "per_process_memory" {
				if reason := split(v, d, idx, in.Owners, lookup); reason != "" {
					a.Mode, a.Reason = "device", reason
				}
			}
			v.Attribution = append(v.Attribution, a)
		}
		if canSplit {
			v.Unattributed = append(v.Unattributed, unattributed(v, d, idx, in.Owners, lookup)...)
		}
	}
}

// holderOf finds which of the device's holders a process belongs to: by its
// container ID, or by its pod when that pod has a single holder container.
// ok is false for processes of no holder; known is false when the process's
// cgroup could not be read at all.
func holderOf(v *View, idx []int, res OwnerResult, lookup PodLookup) (holder int, ok, known bool) {
	if res.Err != nil {
		return -1, false, errors.Is(res.Err, cgroup.ErrNotInPod)
	}
	if ref, found := lookup.ContainerByID(res.Owner.ContainerID); found && res.Owner.ContainerID != "" {
		for _, i := range idx {
			u := v.Usage[i]
			if u.Namespace == ref.Namespace && u.Pod == ref.Pod && u.Container == ref.Container {
				return i, true, true
			}
		}
		return -1, false, true
	}
	if pod, found := lookup.PodByUID(res.Owner.PodUID); found {
		match := -1
		for _, i := range idx {
			u := v.Usage[i]
			if u.Namespace == pod.Namespace && u.Pod == pod.Name {
				if match >= 0 {
					return -1, false, true // several containers of the pod: cannot tell which
				}
				match = i
			}
		}
		if match >= 0 {
			return match, true, true
		}
	}
	return -1, false, true
}

// split gives each holder of a shared device its own processes' numbers. A
// holder with no process shows 0: it holds a replica and uses nothing.
// Without per-process utilization (d.UtilReason) only memory is split and
// the duty cycle stays the device's. It returns a reason when some process
// could not be placed, leaving the device-wide numbers in place rather than
// guessing.
func split(v *View, d *nvml.Reading, idx []int, owners map[uint32]OwnerResult, lookup PodLookup) string {
	duty := make(map[int]float64, len(idx))
	mem := make(map[int]uint64, len(idx))
	var total float64 // every process's SM time, holders' or not
	for _, p := range d.Processes {
		total += p.SMUtil
		res, seen := owners[p.PID]
		if !seen {
			return "pid_unresolved"
		}
		h, ok, known := holderOf(v, idx, res, lookup)
		if !known {
			return "pid_unresolved"
		}
		if !ok {
			continue // not a holder's: reported as unattributed use
		}
		duty[h] += p.SMUtil
		mem[h] += p.MemoryUsed
	}
	for _, i := range idx {
		u := &v.Usage[i]
		u.MemoryUsed, u.HasMemory = mem[i], true
		if d.UtilReason != "" {
			continue
		}
		u.DutyCycle, u.HasDutyCycle = min(duty[i], 100), true
		if total > 0 {
			u.Share, u.HasShare = duty[i]/total, true
		}
	}
	return ""
}

// unattributed sums, per owning pod, the processes on a device that belong
// to none of its holders.
func unattributed(v *View, d *nvml.Reading, idx []int, owners map[uint32]OwnerResult, lookup PodLookup) []Unattributed {
	type key struct{ ns, pod string }
	sums := map[key]*Unattributed{}
	for _, p := range d.Processes {
		res, seen := owners[p.PID]
		if !seen {
			continue
		}
		_, ok, known := holderOf(v, idx, res, lookup)
		if ok || !known {
			continue
		}
		var k key
		if res.Err == nil {
			if pod, found := lookup.PodByUID(res.Owner.PodUID); found {
				k = key{pod.Namespace, pod.Name}
			}
		}
		u := sums[k]
		if u == nil {
			u = &Unattributed{Device: d, Namespace: k.ns, Pod: k.pod}
			sums[k] = u
		}
		u.DutyCycle += p.SMUtil
		u.HasDutyCycle = d.UtilReason == ""
		u.MemoryUsed += p.MemoryUsed
	}
	out := make([]Unattributed, 0, len(sums))
	for _, u := range sums {
		u.DutyCycle = min(u.DutyCycle, 100)
		out = append(out, *u)
	}
	resource.SortByKey(out, func(u *Unattributed) resource.Key {
		return resource.Key{Namespace: u.Namespace, Pod: u.Pod}
	})
	return out
}
