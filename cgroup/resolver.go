package cgroup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Result is what the cgroup of one process said.
type Result struct {
	Owner Owner
	// Err is ErrNotInPod for host processes, another error when the
	// process could not be read (no host procfs, exited).
	Err error
}

// Resolver keeps the owners of the GPU processes NVML reports, read off the
// scrape path: Update runs after each NVML poll (nvml.Config.AfterPoll) and reads the cgroup of
// every PID not seen before, so a scrape only reads the last map. PIDs no
// longer reported are forgotten, so a reused PID is read afresh, and the map
// never holds more than the PIDs of the last poll.
type Resolver struct {
	reader Reader
	// unavailable is why the host's procfs cannot be read, or nil.
	unavailable error

	mu     sync.Mutex // serialises Update
	owners atomic.Pointer[map[uint32]Result]
	reads  atomic.Uint64
	failed atomic.Uint64
}

// NewResolver returns a Resolver reading cgroups under r.Root. A procfs that
// cannot be read at all is reported by Read, once, instead of per PID.
func NewResolver(r Reader) *Resolver {
	res := &Resolver{reader: r, unavailable: r.Available()}
	empty := map[uint32]Result{}
	res.owners.Store(&empty)
	return res
}

// Update resolves pids, reusing what earlier updates read.
func (r *Resolver) Update(pids []uint32) {
	if r.unavailable != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := *r.owners.Load()
	next := make(map[uint32]Result, len(pids))
	for _, pid := range pids {
		if _, done := next[pid]; done {
			continue
		}
		res, ok := prev[pid]
		if !ok {
			o, err := r.reader.Owner(pid)
			res = Result{Owner: o, Err: err}
			r.reads.Add(1)
			if err != nil && !errors.Is(err, ErrNotInPod) {
				r.failed.Add(1)
			}
		}
		next[pid] = res
	}
	r.owners.Store(&next)
}

// Read returns the owners resolved by the last Update; the map is never
// modified after it is published. The error says why no process can be
// resolved at all.
func (r *Resolver) Read(context.Context) (map[uint32]Result, error) {
	if r.unavailable != nil {
		return nil, fmt.Errorf("host procfs: %w", r.unavailable)
	}
	return *r.owners.Load(), nil
}

// Reads returns how many cgroup files were read; tests use it to show a
// scrape reads none.
func (r *Resolver) Reads() uint64 { return r.reads.Load() }

// Errors returns the processes whose cgroup could not be read (exited
// between NVML's report and the read, or unreadable), by reason.
func (r *Resolver) Errors() map[string]uint64 {
	return map[string]uint64{"read": r.failed.Load()}
}
