package nvml

import (
	"context"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// criticalEvents are the NVML event types counted: Xid errors, and
// double-bit ECC errors, which the driver reports as Xid 48. A GPU that
// delivers Xid events delivers a double-bit error as Xid 48 as well, so its
// double-bit events are not registered: each error counts once. Only a GPU
// without Xid events has its double-bit errors registered, counted as 48.
const criticalEvents = gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError

// eventMask is what to register of the critical events a GPU supports.
func eventMask(supported uint64) uint64 {
	mask := supported & criticalEvents
	if mask&gonvml.EventTypeXidCriticalError != 0 {
		return gonvml.EventTypeXidCriticalError
	}
	return mask
}

// lostBackoff is how long the events goroutine waits after EventSetWait
// answered that a GPU is lost: a real driver answers so at once after Xid
// 79, and waiting straight away again would burn a core until restart.
const lostBackoff = time.Second

// xidDoubleBitECC is the Xid the driver logs for a double-bit ECC error.
const xidDoubleBitECC = 48

// maxXidCodes bounds the distinct Xid codes kept per device; further codes
// count under OtherXid, so a broken driver cannot grow the label set.
const maxXidCodes = 32

// OtherXid is the Xid key of codes past maxXidCodes.
const OtherXid = ^uint64(0)

// eventWait is how long one EventSetWait blocks: the most shutdown waits
// for the events goroutine.
const eventWait = 500 * time.Millisecond

// eventKey is where an event happened: a GPU, or a MIG instance of it.
type eventKey struct {
	gpu    string
	gi, ci uint32 // 0xFFFFFFFF when the event names no instance
}

// events owns the NVML event sets. The polling loop creates them and
// registers devices; one goroutine waits on the newest and counts events;
// each poll copies the counts into the snapshot.
//
// NVML cannot take a device out of a set, and a set holding a lost GPU
// answers every wait with GPU_IS_LOST, hiding every other GPU's events. So
// when a GPU is lost the polling loop builds a new set of the GPUs left and
// hands it to the goroutine, which frees the old one between two waits (it
// is the only one that waits on it). A GPU back after a reset is registered
// in the set of the day, as a new one is.
type events struct {
	set        gonvml.EventSet // the newest set, the one devices go into
	registered map[string]bool // GPU UUIDs whose events are registered in set
	failed     bool            // no event set could be created
	rebuild    bool            // a registered GPU was lost: build a new set
	running    bool            // the goroutine waits: new sets go through next
	next       chan gonvml.EventSet

	mu     sync.Mutex
	counts map[eventKey]map[uint64]uint64
	last   map[eventKey]time.Time
}

// registerEvents creates the event set on first use, builds a new one after
// a registered GPU was lost, and registers the critical events every whole
// GPU supports.
func (s *Sampler) registerEvents() {
	e := &s.events
	if e.failed {
		return
	}
	if e.set == nil || e.rebuild {
		set, ret := s.lib.EventSetCreate()
		if ret != gonvml.SUCCESS {
			s.countError("event_set")
			if e.set != nil {
				return // keep the old set; try again at the next poll
			}
			s.log.Warn("NVML event set unavailable: no Xid counts", "err", reason(ret))
			e.failed = true
			return
		}
		if e.set == nil {
			e.counts, e.last = map[eventKey]map[uint64]uint64{}, map[eventKey]time.Time{}
			e.next = make(chan gonvml.EventSet, 1)
		} else {
			s.handOver(set)
		}
		e.set, e.registered, e.rebuild = set, map[string]bool{}, false
	}
	for _, d := range s.devices {
		if d.info.IsMIG() || e.registered[d.info.UUID] || d.tel == nil {
			continue
		}
		mask, ret := d.h.GetSupportedEventTypes()
		if ret == gonvml.SUCCESS {
			mask = eventMask(mask)
		}
		if ret != gonvml.SUCCESS || mask == 0 {
			d.tel.supported &^= FamilyXid
			e.registered[d.info.UUID] = true // not asked again
			continue
		}
		switch ret := d.h.RegisterEvents(mask, e.set); ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_GPU_IS_LOST:
			continue // the poll drops it; registered when it is back
		default:
			s.countError("event_register")
			d.tel.supported &^= FamilyXid
		}
		e.registered[d.info.UUID] = true
	}
}

// handOver gives the goroutine a new set to wait on in place of e.set. One
// handed over before and not yet taken was never waited on: it is freed
// here.
func (s *Sampler) handOver(set gonvml.EventSet) {
	e := &s.events
	if !e.running {
		_ = s.lib.EventSetFree(e.set) // nothing waits on it yet
		return
	}
	select {
	case stale := <-e.next:
		_ = s.lib.EventSetFree(stale)
	default:
	}
	e.next <- set
}

// waitEvents counts events until ctx ends, waiting on set and then on each
// set handed over, and frees the sets it waited on when it returns: it is
// the only goroutine that waits on them.
func (s *Sampler) waitEvents(ctx context.Context, set gonvml.EventSet) {
	e := &s.events
	defer func() {
		select {
		case pending := <-e.next:
			_ = s.lib.EventSetFree(pending)
		default:
		}
		// Nothing is left to do with a set that fails to free at shutdown.
		_ = s.lib.EventSetFree(set)
	}()
	for ctx.Err() == nil {
		select {
		case newer := <-e.next:
			_ = s.lib.EventSetFree(set)
			set = newer
		default:
		}
		data, ret := s.lib.EventSetWait(set, uint32(eventWait/time.Millisecond))
		switch ret {
		case gonvml.SUCCESS:
			s.countEvent(data)
		case gonvml.ERROR_TIMEOUT:
		case gonvml.ERROR_GPU_IS_LOST:
			// The poll loop drops the GPU, counts it and builds a set
			// without it; until then this set answers so at once.
			pause(ctx, lostBackoff)
		default:
			s.countError("event_wait")
			pause(ctx, time.Second) // do not spin on a broken set
		}
	}
}

// pause waits for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (s *Sampler) countEvent(data gonvml.EventData) {
	if data.Device == nil {
		return
	}
	uuid, ret := data.Device.GetUUID()
	if ret != gonvml.SUCCESS {
		s.countError("event_device")
		return
	}
	xid := data.EventData
	if data.EventType == gonvml.EventTypeDoubleBitEccError {
		xid = xidDoubleBitECC
	}
	k := eventKey{gpu: uuid, gi: data.GpuInstanceId, ci: data.ComputeInstanceId}
	e := &s.events
	e.mu.Lock()
	defer e.mu.Unlock()
	byCode := e.counts[k]
	if byCode == nil {
		byCode = map[uint64]uint64{}
		e.counts[k] = byCode
	}
	if _, known := byCode[xid]; !known && len(byCode) >= maxXidCodes {
		xid = OtherXid
	}
	byCode[xid]++
	e.last[k] = s.cfg.Now()
}

// xidOf copies the Xid counts and last event time of a device: a whole
// GPU's own events, or a MIG instance's, matched on its GPU and compute
// instance IDs.
func (s *Sampler) xidOf(info *DeviceInfo) (map[uint64]uint64, time.Time) {
	e := &s.events
	e.mu.Lock()
	defer e.mu.Unlock()
	var out map[uint64]uint64
	var last time.Time
	for k, byCode := range e.counts {
		if !eventMatches(k, info) {
			continue
		}
		if out == nil {
			out = make(map[uint64]uint64, len(byCode))
		}
		for code, n := range byCode {
			out[code] += n
		}
		if t := e.last[k]; t.After(last) {
			last = t
		}
	}
	return out, last
}

const noInstance = ^uint32(0)

func eventMatches(k eventKey, info *DeviceInfo) bool {
	if !info.IsMIG() {
		return k.gpu == info.UUID && (!info.MIGEnabled || k.gi == noInstance)
	}
	return k.gpu == info.ParentUUID && k.gi != noInstance && int(k.gi) == info.GPUInstance &&
		(k.ci == noInstance || int(k.ci) == info.ComputeInstance)
}
