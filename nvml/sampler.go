package nvml

import (
	"context"
	"errors"
	"log/slog"
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
}

// tracked is the loop-owned state of one device.
type tracked struct {
	info     DeviceInfo
	h        gonvml.Device
	win      window
	useRates bool // GetSamples unsupported: poll GetUtilizationRates instead
	noUtil   bool // no utilization at all (MIG instances without GPM)
	memV1    bool // GetMemoryInfo_v2 unsupported
	lost     bool

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
	noMPSListed bool               // GetMPSComputeRunningProcesses unsupported
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
	defer func() {
		if s.inited {
			for _, d := range s.devices {
				s.freeGPM(d)
			}
			s.lib.Shutdown()
		}
	}()
	if s.Polls() == 0 {
		s.Poll()
	}
	for {
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
			continue // lost: its series vanish, rediscovery may bring it back
		}
		live = append(live, d)
		readings = append(readings, r)
	}
	s.devices = live
	end := s.cfg.Now()
	snap := &Snapshot{Up: true, Devices: readings, Taken: end, PollDuration: end.Sub(start)}
	s.snap.Store(snap)
	if s.cfg.AfterPoll != nil {
		s.cfg.AfterPoll(snap.PIDs())
	}
}
