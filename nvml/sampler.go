package nvml

import (
	"context"
	"errors"
	"fmt"
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
	s.snap.Store(&Snapshot{Up: true, Devices: readings, Taken: end, PollDuration: end.Sub(start)})
}

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
			t.win, t.useRates, t.noUtil, t.memV1 = prev.win, prev.useRates, prev.noUtil, prev.memV1
			t.procs, t.lastProcTS, t.procReason, t.noMPSListed = prev.procs, prev.lastProcTS, prev.procReason, prev.noMPSListed
			switch {
			case gpm != nil && prev.gpm != nil:
				t.gpm = prev.gpm // keep the previous sample: no gap in the duty cycle
			case gpm == nil && prev.gpm != nil:
				s.freeGPM(prev)
				t.noUtil = true
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
		if mode, _, ret := h.GetMigMode(); ret == gonvml.SUCCESS && mode == gonvml.DEVICE_MIG_ENABLE {
			gpu.info.MIGEnabled = true
			gpu.noUtil = true // NVML reports no utilization on MIG-enabled GPUs
			keep(gpu)
			for _, mig := range s.discoverMIG(gpu, s.gpmSupported(h)) {
				keep(mig)
			}
			continue
		}
		keep(gpu)
	}
	sort.SliceStable(found, func(a, b int) bool { return found[a].info.Index < found[b].info.Index })
	for _, gone := range old {
		s.freeGPM(gone) // destroyed MIG instances, GPUs gone
	}
	s.devices = found
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
		}
		out = append(out, t)
	}
	return out
}

// nvmlError carries an NVML return code through error wrapping.
type nvmlError struct {
	op  string
	ret gonvml.Return
}

func (e nvmlError) Error() string { return e.op + ": " + reason(e.ret) }

func reasonOf(err error) string {
	var ne nvmlError
	if errors.As(err, &ne) {
		return reason(ne.ret)
	}
	return "nvml_error"
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

// pollDevice reads one device; ok is false when the device is lost.
func (s *Sampler) pollDevice(d *tracked, nowUS, cutoff uint64) (Reading, bool) {
	r := Reading{DeviceInfo: d.info}
	if !d.noUtil {
		poll := s.pollUtilization
		if d.gpm != nil {
			poll = s.pollGPM
		}
		if ret := poll(d, nowUS, cutoff); ret == gonvml.ERROR_GPU_IS_LOST {
			return s.lose(d)
		}
		d.win.trim(cutoff)
		r.DutyCycle, r.HasDutyCycle = d.win.mean(cutoff)
	}
	if s.cfg.Processes && !d.info.MIGEnabled {
		if ret := s.pollProcesses(d, &r, nowUS, cutoff); ret == gonvml.ERROR_GPU_IS_LOST {
			return s.lose(d)
		}
	}
	used, total, ret := s.memory(d)
	switch ret {
	case gonvml.SUCCESS:
		r.MemoryUsed, r.HasMemory = used, true
		if total > 0 {
			// Remembered, so a later failed read loses only the used bytes.
			d.info.MemoryTotal, r.MemoryTotal = total, total
		}
	case gonvml.ERROR_GPU_IS_LOST:
		return s.lose(d)
	default:
		s.countError(reason(ret))
		if d.info.IsMIG() {
			s.rediscover = true // a destroyed instance's handle fails
		}
	}
	return r, true
}

func (s *Sampler) lose(d *tracked) (Reading, bool) {
	s.countError("gpu_lost")
	s.log.Error("GPU lost; dropping its series", "gpu_id", d.info.UUID)
	d.lost = true
	s.freeGPM(d)
	return Reading{}, false
}

// pollUtilization appends new utilization samples to the device's window.
func (s *Sampler) pollUtilization(d *tracked, nowUS, cutoff uint64) gonvml.Return {
	if !d.useRates {
		vt, samples, ret := d.h.GetSamples(gonvml.GPU_UTILIZATION_SAMPLES, d.win.last())
		switch ret {
		case gonvml.SUCCESS:
			for _, smp := range samples {
				if smp.TimeStamp <= cutoff {
					continue
				}
				v, ok := sampleValue(vt, smp.SampleValue)
				if !ok {
					s.countError("value_out_of_range")
					continue
				}
				d.win.add(smp.TimeStamp, v, cutoff)
			}
			return ret
		case gonvml.ERROR_NOT_FOUND:
			return gonvml.SUCCESS // no new samples since the last poll
		case gonvml.ERROR_NOT_SUPPORTED:
			s.log.Info("utilization samples not supported; falling back to utilization rates", "gpu_id", d.info.UUID)
			d.useRates = true
		case gonvml.ERROR_GPU_IS_LOST:
			return ret // counted once, by lose
		default:
			s.countError(reason(ret))
			return ret
		}
	}
	u, ret := d.h.GetUtilizationRates()
	switch ret {
	case gonvml.SUCCESS:
		if u.Gpu > 100 {
			s.countError("value_out_of_range")
			return ret
		}
		d.win.add(nowUS, float64(u.Gpu), cutoff)
	case gonvml.ERROR_NOT_SUPPORTED:
		s.log.Info("GPU utilization not supported by this device", "gpu_id", d.info.UUID)
		d.noUtil = true
	case gonvml.ERROR_GPU_IS_LOST:
		// counted once, by lose
	default:
		s.countError(reason(ret))
	}
	return ret
}

// memory reads used and total bytes, preferring the v2 call whose "used"
// excludes memory the driver reserves.
func (s *Sampler) memory(d *tracked) (used, total uint64, ret gonvml.Return) {
	if !d.memV1 {
		m, ret := d.h.GetMemoryInfo_v2()
		switch ret {
		case gonvml.SUCCESS:
			return m.Used, m.Total, ret
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND, gonvml.ERROR_ARGUMENT_VERSION_MISMATCH:
			d.memV1 = true
		default:
			return 0, 0, ret
		}
	}
	m, ret := d.h.GetMemoryInfo()
	return m.Used, m.Total, ret
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
