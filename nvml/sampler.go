package nvml

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Config holds the Sampler's settings.
type Config struct {
	// Window is the duty-cycle window: the mean of the samples it covers.
	Window time.Duration
	// Interval is how often NVML is polled. It must stay well under the
	// ~16 s of samples NVML keeps, or samples are lost between polls.
	Interval time.Duration
	// RetryInterval is how often a failed Init is retried: drivers are often
	// installed after the exporter starts.
	RetryInterval time.Duration
	// RediscoverInterval is how often devices are enumerated again, to pick
	// up MIG layout changes and devices that came back.
	RediscoverInterval time.Duration
	// Processes turns on per-process collection (running compute and MPS
	// processes, per-process SM utilization) for attributing shared GPUs.
	Processes bool
	Logger    *slog.Logger
	// AfterPoll, when set, is called in the polling goroutine with the PIDs
	// of the GPU processes each successful poll found: work that must
	// follow NVML's view (resolving the processes' cgroups) runs there,
	// off the scrape path and in step with the snapshot.
	AfterPoll func(pids []uint32)
	// Telemetry, Health and Events switch on the reading groups of the
	// same names (docs/metrics.md): power, energy, temperatures, clocks,
	// bandwidth; ECC, retired pages, remapped rows, recovery action; Xid
	// events in their own goroutine.
	Telemetry, Health, Events bool
	// Profiling reads GPM metrics (SM activity, occupancy, tensor, DRAM,
	// FP16/32/64, PCIe, NVLink) on Hopper and newer.
	Profiling bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Snapshot is the Sampler's latest view. It is never modified after it is
// published, so scrapes read it without locks or NVML calls.
type Snapshot struct {
	// Up is true while NVML is initialised.
	Up bool
	// Err says why NVML is down.
	Err error
	// Devices are sorted by index, MIG instances after their parent.
	Devices []Reading
	// Taken is when the poll that produced it finished.
	Taken time.Time
	// PollDuration is how long that poll took.
	PollDuration time.Duration
	// Lost are the GPUs that fell off the bus since they were last
	// discovered: they have no readings, only their failed health.
	Lost []DeviceInfo
}

// tracked is the loop-owned state of one device.
type tracked struct {
	info     DeviceInfo
	h        gonvml.Device
	win      window
	useRates bool // GetSamples unsupported: poll GetUtilizationRates instead
	noUtil   bool // no utilization at all (MIG instances without GPM)
	memV1    bool // GetMemoryInfo_v2 unsupported
	// memDerived: a MIG-enabled GPU whose memory NVML withholds without
	// MIG-monitor privilege; its memory is its instances' sum.
	memDerived bool
	lost       bool

	// MIG: parent is the GPU handle of an instance (GPM samples are taken
	// through it); gpm is its GPM history, nil where GPM is not used.
	// migSlots is, on a MIG-enabled GPU, how many instance handles to look
	// at for layout changes.
	parent   gonvml.Device
	gpm      *gpmState
	migSlots int

	// Per-process state.
	procs       map[uint32]*window // per-PID SM utilization, one point per poll
	lastProcTS  uint64             // newest process-utilization sample seen
	procReason  string             // why per-process data is unavailable, once known
	utilReason  string             // why per-process utilization is, when the process list is not
	noMPSListed bool               // GetMPSComputeRunningProcesses unsupported

	// Whole GPUs: telemetry and health state; nil on MIG instances.
	tel        *telemetryState
	eccEnabled bool
}

// Sampler polls NVML in the background. It is the only caller of NVML, so
// NVML calls per scrape are zero, whatever the number of scrapers.
type Sampler struct {
	lib gonvml.Interface
	cfg Config
	log *slog.Logger

	// Loop-owned state.
	inited        bool
	devices       []*tracked
	lastDiscovery time.Time
	rediscover    bool // a MIG handle failed: enumerate again on the next poll
	initLogged    bool

	events events
	lost   map[string]DeviceInfo // GPUs lost since they were last discovered

	snap  atomic.Pointer[Snapshot]
	polls atomic.Uint64

	errMu  sync.Mutex
	errors map[string]uint64
}

// NewSampler returns a Sampler over lib (nvml.New() or a mock server).
func NewSampler(lib gonvml.Interface, cfg Config) *Sampler {
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 30 * time.Second
	}
	if cfg.RediscoverInterval <= 0 {
		cfg.RediscoverInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sampler{lib: lib, cfg: cfg, log: cfg.Logger, errors: map[string]uint64{}}
	s.snap.Store(&Snapshot{Err: errors.New("NVML not polled yet")})
	return s
}

// Snapshot returns the latest view.
func (s *Sampler) Snapshot() *Snapshot { return s.snap.Load() }

// Read returns the latest snapshot, and the reason NVML is down when it is:
// the collector's one shape of source. It makes no NVML call.
func (s *Sampler) Read(context.Context) (*Snapshot, error) {
	snap := s.snap.Load()
	if !snap.Up {
		if snap.Err == nil {
			return snap, errors.New("NVML is not initialised")
		}
		return snap, snap.Err
	}
	return snap, nil
}

// lostList returns the lost GPUs sorted by index.
func (s *Sampler) lostList() []DeviceInfo {
	if len(s.lost) == 0 {
		return nil
	}
	out := make([]DeviceInfo, 0, len(s.lost))
	for _, info := range s.lost {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// PIDs returns the processes on the snapshot's devices.
func (snap *Snapshot) PIDs() []uint32 {
	var out []uint32
	for i := range snap.Devices {
		for _, p := range snap.Devices[i].Processes {
			out = append(out, p.PID)
		}
	}
	return out
}

// Polls returns how many polls ran; tests use it to show scrapes cause none.
func (s *Sampler) Polls() uint64 { return s.polls.Load() }

// Errors returns the cumulative error counts by reason.
func (s *Sampler) Errors() map[string]uint64 {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	out := make(map[string]uint64, len(s.errors))
	for k, v := range s.errors {
		out[k] = v
	}
	return out
}

func (s *Sampler) countError(reason string) {
	s.errMu.Lock()
	s.errors[reason]++
	s.errMu.Unlock()
}

// Run polls until ctx ends, then shuts NVML down. It polls at once unless
// the caller already did (main polls before serving so the first scrape has
// devices).
func (s *Sampler) Run(ctx context.Context) {
	var eventsDone chan struct{}
	defer func() {
		if eventsDone != nil {
			<-eventsDone // it frees the sets: NVML shuts down after
		}
		if s.inited {
			for _, d := range s.devices {
				s.freeGPM(d)
			}
			_ = s.lib.Shutdown() // exiting: nothing to do about a failure
		}
	}()
	if s.Polls() == 0 {
		s.Poll()
	}
	for {
		if eventsDone == nil && s.events.set != nil {
			eventsDone = make(chan struct{})
			s.events.running = true
			set := s.events.set
			go func() { defer close(eventsDone); s.waitEvents(ctx, set) }()
		}
		wait := s.cfg.Interval
		if !s.inited {
			wait = s.cfg.RetryInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		s.Poll()
	}
}

// Poll runs one round: Init if needed, rediscovery when due, then samples and
// memory of every device. Run calls it on a timer; tests call it directly.
func (s *Sampler) Poll() {
	start := s.cfg.Now()
	s.polls.Add(1)
	if !s.inited {
		if err := s.init(); err != nil {
			s.snap.Store(&Snapshot{Err: err, Taken: s.cfg.Now()})
			return
		}
	}
	if s.devices == nil || s.rediscover || start.Sub(s.lastDiscovery) >= s.cfg.RediscoverInterval || s.layoutChanged() {
		s.rediscover = false
		s.discover()
		s.lastDiscovery = start
	}
	nowUS := uint64(start.UnixMicro())
	cutoff := nowUS - uint64(s.cfg.Window.Microseconds())
	readings := make([]Reading, 0, len(s.devices))
	live := s.devices[:0]
	for _, d := range s.devices {
		r, ok := s.pollDevice(d, nowUS, cutoff)
		if !ok {
			// Lost: its series vanish but its failed health stays until
			// rediscovery finds it again.
			if s.lost == nil {
				s.lost = map[string]DeviceInfo{}
			}
			s.lost[d.info.UUID] = d.info
			if s.events.registered[d.info.UUID] {
				s.events.rebuild = true // its set would answer GPU_IS_LOST
			}
			continue
		}
		live = append(live, d)
		readings = append(readings, r)
	}
	s.devices = live
	deriveMIGMemory(live, readings)
	if s.events.rebuild {
		s.registerEvents()
	}
	end := s.cfg.Now()
	snap := &Snapshot{Up: true, Devices: readings, Taken: end, PollDuration: end.Sub(start), Lost: s.lostList()}
	s.snap.Store(snap)
	if s.cfg.AfterPoll != nil {
		s.cfg.AfterPoll(snap.PIDs())
	}
}
