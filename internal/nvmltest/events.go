package nvmltest

import (
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// Events is a mock of NVML's event sets: Inject queues an event that a wait
// returns; waits time out when none is queued.
//
// Devices passed to Track are held to the driver's rules: an event of such
// a device is returned only by a wait on a set it was registered in for
// that event type (an event of no set stays queued), a set
// holding a lost device (Lose) answers every wait with GPU_IS_LOST at once,
// and a registration made before the device was lost never delivers again,
// even once the device is back (Restore), as a reset GPU is a new device to
// the driver. Events of untracked devices come out of any set.
type Events struct {
	mu      sync.Mutex
	queue   []gonvml.EventData
	waits   int
	waitFn  func() gonvml.Return
	sets    map[gonvml.EventSet]map[gonvml.Device]registration // live sets
	created int
	badFree int
	tracked map[gonvml.Device]bool
	gen     map[gonvml.Device]int // bumped when a device is lost and when it is back
	lost    map[gonvml.Device]bool
}

// registration is a device's entry in a set: the event types and the
// device's generation when registered.
type registration struct {
	mask uint64
	gen  int
}

// FailWaits makes every later wait return ret.
func (e *Events) FailWaits(ret gonvml.Return) {
	e.mu.Lock()
	e.waitFn = func() gonvml.Return { return ret }
	e.mu.Unlock()
}

// Waits returns how many times EventSetWait was called.
func (e *Events) Waits() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waits
}

// Pending returns how many injected events no wait has returned yet.
func (e *Events) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Freed reports whether every event set created was freed, none twice.
func (e *Events) Freed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.created > 0 && len(e.sets) == 0 && e.badFree == 0
}

// Live returns how many sets exist, and how many frees named no live set.
func (e *Events) Live() (sets, badFrees int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sets), e.badFree
}

// Inject queues an Xid event on dev (a GPU, gi/ci 0xFFFFFFFF) or one of its
// MIG instances.
func (e *Events) Inject(dev gonvml.Device, xid uint64, gi, ci uint32) {
	e.mu.Lock()
	e.queue = append(e.queue, gonvml.EventData{Device: dev, EventType: gonvml.EventTypeXidCriticalError, EventData: xid, GpuInstanceId: gi, ComputeInstanceId: ci})
	e.mu.Unlock()
}

// InjectDoubleBit queues what the driver reports for a double-bit ECC
// error: a double-bit event and Xid 48. A tracked device's set returns each
// only if it was registered for that event type.
func (e *Events) InjectDoubleBit(dev gonvml.Device) {
	e.mu.Lock()
	e.queue = append(e.queue,
		gonvml.EventData{Device: dev, EventType: gonvml.EventTypeDoubleBitEccError, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF},
		gonvml.EventData{Device: dev, EventType: gonvml.EventTypeXidCriticalError, EventData: 48, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF})
	e.mu.Unlock()
}

// Track holds the device whose handle the sampler sees as handle (a
// server.Device, or dev itself) to the driver's registration rules
// (see Events). Call it after Apply: it wraps dev's RegisterEvents.
func (e *Events) Track(handle gonvml.Device, dev *mock.Device) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tracked == nil {
		e.tracked, e.gen, e.lost = map[gonvml.Device]bool{}, map[gonvml.Device]int{}, map[gonvml.Device]bool{}
	}
	d := handle
	e.tracked[d] = true
	inner := dev.RegisterEventsFunc
	dev.RegisterEventsFunc = func(mask uint64, set gonvml.EventSet) gonvml.Return {
		ret := gonvml.SUCCESS
		if inner != nil {
			ret = inner(mask, set)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		regs, ok := e.sets[set]
		switch {
		case !ok:
			return gonvml.ERROR_INVALID_ARGUMENT
		case e.lost[d]:
			return gonvml.ERROR_GPU_IS_LOST
		case ret == gonvml.SUCCESS:
			r := regs[d]
			if r.gen != e.gen[d] {
				r = registration{gen: e.gen[d]}
			}
			r.mask |= mask
			regs[d] = r
		}
		return ret
	}
}

// Lose makes dev fall off the bus for the event sets.
func (e *Events) Lose(dev gonvml.Device) {
	e.mu.Lock()
	e.lost[dev] = true
	e.gen[dev]++
	e.mu.Unlock()
}

// Restore brings dev back after a reset; registrations from before stay
// dead.
func (e *Events) Restore(dev gonvml.Device) {
	e.mu.Lock()
	delete(e.lost, dev)
	e.gen[dev]++
	e.mu.Unlock()
}

// Install makes lib's event calls use e.
func (e *Events) Install(lib *mock.Interface) {
	lib.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.sets == nil {
			e.sets = map[gonvml.EventSet]map[gonvml.Device]registration{}
		}
		set := &mock.EventSet{}
		e.sets[set] = map[gonvml.Device]registration{}
		e.created++
		return set, gonvml.SUCCESS
	}
	lib.EventSetFreeFunc = func(set gonvml.EventSet) gonvml.Return {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.sets[set]; !ok {
			e.badFree++
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		delete(e.sets, set)
		return gonvml.SUCCESS
	}
	lib.EventSetWaitFunc = func(set gonvml.EventSet, timeoutms uint32) (gonvml.EventData, gonvml.Return) {
		e.mu.Lock()
		e.waits++
		if e.waitFn != nil {
			fn := e.waitFn
			e.mu.Unlock()
			return gonvml.EventData{}, fn()
		}
		regs, ok := e.sets[set]
		if !ok {
			e.mu.Unlock()
			return gonvml.EventData{}, gonvml.ERROR_INVALID_ARGUMENT
		}
		for d := range regs {
			if e.lost[d] {
				e.mu.Unlock()
				return gonvml.EventData{}, gonvml.ERROR_GPU_IS_LOST
			}
		}
		for i, ev := range e.queue {
			r, in := regs[ev.Device]
			if !e.tracked[ev.Device] || (in && r.gen == e.gen[ev.Device] && r.mask&ev.EventType != 0) {
				e.queue = append(e.queue[:i:i], e.queue[i+1:]...)
				e.mu.Unlock()
				return ev, gonvml.SUCCESS
			}
		}
		e.mu.Unlock()
		time.Sleep(time.Duration(min(timeoutms, 20)) * time.Millisecond)
		return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
	}
}
