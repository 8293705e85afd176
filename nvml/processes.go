package nvml

import (
	"cmp"
	"slices"
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
func (s *Sampler) processUtilization(d *tracked) (samples []gonvml.ProcessUtilizationSample, ret gonvml.Return, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			samples, ret, panicked = nil, gonvml.ERROR_UNKNOWN, true
		}
	}()
	samples, ret = d.h.GetProcessUtilization(d.lastProcTS)
	return samples, ret, false
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

	samples, ret := s.pollProcessUtil(d, r)
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED:
		// Listed, with their memory and without utilization.
		r.Processes, r.ProcessesOK = listed(procs), true
		return gonvml.SUCCESS
	default:
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
	r.Processes = listed(procs)
	for i := range r.Processes {
		pid := r.Processes[i].PID
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
		r.Processes[i].SMUtil, r.Processes[i].HasUtil = w.mean(cutoff)
	}
	for pid, w := range d.procs {
		if _, ok := slices.BinarySearchFunc(r.Processes, pid, func(p Process, pid uint32) int { return cmp.Compare(p.PID, pid) }); !ok {
			delete(d.procs, pid) // exited: its history goes with it
			continue
		}
		w.trim(cutoff)
	}
	r.ProcessesOK = true
	return gonvml.SUCCESS
}

// pollProcessUtil reads the device's per-process utilization samples. It
// returns NOT_SUPPORTED on devices that never give them (MIG instances:
// nvml.h, "On MIG-enabled GPUs, querying process utilization is not
// currently supported"), remembered and logged once: their process list is
// still served, with memory and no utilization. Any other failure is
// counted and loses this poll's process data.
func (s *Sampler) pollProcessUtil(d *tracked, r *Reading) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
	if d.utilReason != "" {
		r.UtilReason = d.utilReason
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	samples, ret, panicked := s.processUtilization(d)
	switch {
	case panicked:
		s.countError("process_utilization_panic")
		return nil, ret
	case ret == gonvml.SUCCESS, ret == gonvml.ERROR_NOT_FOUND:
		return samples, gonvml.SUCCESS
	case ret == gonvml.ERROR_NOT_SUPPORTED, ret == gonvml.ERROR_NO_PERMISSION:
		d.utilReason = reason(ret)
		r.UtilReason = d.utilReason
		s.log.Info("per-process utilization unavailable on this device; its processes' memory is still split, its duty cycle stays device-wide", "gpu_id", d.info.UUID, "reason", d.utilReason)
		return nil, gonvml.ERROR_NOT_SUPPORTED
	default:
		s.countError(reason(ret))
		return nil, ret
	}
}

// listed merges NVML's process entries by PID (a process is listed once per
// context, and again as an MPS client), sorted by PID.
func listed(procs []gonvml.ProcessInfo) []Process {
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
	out := make([]Process, 0, len(running))
	for _, p := range running {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}
