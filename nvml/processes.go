package nvml

import (
	"sort"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// valueNotAvailable is NVML's marker for a process memory figure it cannot
// give (no permission, some virtualised setups).
const valueNotAvailable = ^uint64(0)

// processUtilization calls GetProcessUtilization without letting it take
// the process down: go-nvml sizes its buffer with a first call and
// reslices it to the count of a second, so a process that starts between
// the two can make the count outgrow the buffer and the reslice panic. Such
// an answer is counted (reason process_utilization_panic) and the poll goes
// on without per-process utilization this time.
func (s *Sampler) processUtilization(d *tracked) (samples []gonvml.ProcessUtilizationSample, ret gonvml.Return) {
	defer func() {
		if p := recover(); p != nil {
			s.countError("process_utilization_panic")
			samples, ret = nil, gonvml.ERROR_UNKNOWN
		}
	}()
	return d.h.GetProcessUtilization(d.lastProcTS)
}

// pollProcesses lists the device's compute processes (MPS clients included)
// and adds one SM-utilization point per running process to its window. A
// process NVML did not sample this poll was idle: its point is 0.
func (s *Sampler) pollProcesses(d *tracked, r *Reading, nowUS, cutoff uint64) gonvml.Return {
	if d.procReason != "" {
		r.ProcessesReason = d.procReason
		return gonvml.SUCCESS
	}
	procs, ret := d.h.GetComputeRunningProcesses()
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_NO_PERMISSION:
		d.procReason = reason(ret)
		r.ProcessesReason = d.procReason
		s.log.Info("per-process data unavailable on this device; shared-device numbers stay device-wide", "gpu_id", d.info.UUID, "reason", d.procReason)
		return ret
	default:
		s.countError(reason(ret))
		r.ProcessesReason = reason(ret)
		return ret
	}
	if !d.noMPSListed {
		mps, ret := d.h.GetMPSComputeRunningProcesses()
		switch ret {
		case gonvml.SUCCESS:
			procs = append(procs, mps...)
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_NOT_FOUND, gonvml.ERROR_FUNCTION_NOT_FOUND:
			d.noMPSListed = ret != gonvml.ERROR_NOT_FOUND
		default:
			s.countError(reason(ret))
		}
	}

	samples, ret := s.processUtilization(d)
	switch ret {
	case gonvml.SUCCESS, gonvml.ERROR_NOT_FOUND:
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_NO_PERMISSION:
		d.procReason = reason(ret)
		r.ProcessesReason = d.procReason
		s.log.Info("per-process utilization unavailable on this device; shared-device numbers stay device-wide", "gpu_id", d.info.UUID, "reason", d.procReason)
		return ret
	default:
		s.countError(reason(ret))
		r.ProcessesReason = reason(ret)
		return ret
	}
	type acc struct {
		sum float64
		n   int
	}
	polled := map[uint32]acc{}
	for _, smp := range samples {
		if smp.TimeStamp <= d.lastProcTS || smp.TimeStamp <= cutoff {
			continue // already counted, or older than the window
		}
		if smp.SmUtil > 100 {
			s.countError("value_out_of_range")
			continue
		}
		a := polled[smp.Pid]
		a.sum += float64(smp.SmUtil)
		a.n++
		polled[smp.Pid] = a
	}
	for _, smp := range samples {
		d.lastProcTS = max(d.lastProcTS, smp.TimeStamp)
	}

	if d.procs == nil {
		d.procs = map[uint32]*window{}
	}
	running := make(map[uint32]*Process, len(procs))
	for _, p := range procs {
		cur, ok := running[p.Pid]
		if !ok {
			cur = &Process{PID: p.Pid}
			running[p.Pid] = cur
		}
		if p.UsedGpuMemory != valueNotAvailable {
			cur.MemoryUsed += p.UsedGpuMemory
			cur.HasMemory = true
		}
	}
	for pid := range running {
		w := d.procs[pid]
		if w == nil {
			w = &window{}
			d.procs[pid] = w
		}
		var v float64
		if a, ok := polled[pid]; ok && a.n > 0 {
			v = a.sum / float64(a.n)
		}
		w.add(nowUS, v, cutoff)
	}
	for pid, w := range d.procs {
		if _, ok := running[pid]; !ok {
			delete(d.procs, pid) // exited: its history goes with it
			continue
		}
		w.trim(cutoff)
	}
	r.Processes = make([]Process, 0, len(running))
	for pid, p := range running {
		p.SMUtil, p.HasUtil = d.procs[pid].mean(cutoff)
		r.Processes = append(r.Processes, *p)
	}
	sort.Slice(r.Processes, func(i, j int) bool { return r.Processes[i].PID < r.Processes[j].PID })
	r.ProcessesOK = true
	return gonvml.SUCCESS
}
