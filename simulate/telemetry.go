package simulate

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// modelSpec is what a model reports when the scenario does not say: its
// enforced power limit and maximum clocks, from the models' data sheets.
type modelSpec struct {
	limitW        float64
	smMax, memMax uint32
}

func specOf(model string) modelSpec {
	switch model {
	case "A100-SXM4-80GB":
		return modelSpec{400, 1410, 1593}
	case "A100-PCIE-40GB":
		return modelSpec{250, 1410, 1215}
	case "A100-PCIE-80GB":
		return modelSpec{300, 1410, 1512}
	case "A30-PCIE-24GB":
		return modelSpec{165, 1440, 1215}
	case "H100-SXM5-80GB":
		return modelSpec{700, 1980, 2619}
	case "H200-SXM5-141GB":
		return modelSpec{700, 1980, 3201}
	case "B200-SXM5-180GB":
		return modelSpec{1000, 1965, 3996}
	default: // A100-SXM4-40GB
		return modelSpec{400, 1410, 1215}
	}
}

const (
	// idleShare is an idle GPU's power as a share of its limit: about
	// 60 W on a 400 W A100.
	idleShare = 0.15
	// idleSMClockMHz is the SM clock of a GPU nobody uses.
	idleSMClockMHz = 210
	// memoryShare is the memory-controller utilization per unit of SM
	// utilization: training and inference kernels keep memory busy too.
	memoryShare = 0.6
)

// gpuSim computes one simulated GPU's telemetry from its load and the
// scenario's gpuState entry.
type gpuSim struct {
	n    *Node
	i    int
	st   GPUState
	spec modelSpec

	mu       sync.Mutex
	energyMJ float64   // integral of power since the node started
	energyAt time.Time // how far energyMJ has been integrated
}

// load is the GPU's utilization at t, 0-100; on a MIG-enabled GPU the
// instances' utilization weighted by their share of the slices.
func (g *gpuSim) load(t time.Time) float64 {
	profiles, ok := g.n.scenario.MIG[g.i]
	if !ok {
		return g.n.Utilization(g.i, t)
	}
	all := migProfiles(g.n.scenario.Model)
	var u float64
	for j, name := range profiles {
		u += g.n.utilization(devKey{g.i, j}, t) * float64(all[name].Slices) / 7
	}
	return math.Min(100, u)
}

func (g *gpuSim) limitW() float64 {
	if g.st.PowerLimitWatts != nil {
		return *g.st.PowerLimitWatts
	}
	return g.spec.limitW
}

// powerW follows the load between idle power and the limit.
func (g *gpuSim) powerW(t time.Time) float64 {
	if g.st.PowerWatts != nil {
		return *g.st.PowerWatts
	}
	limit := g.limitW()
	idle := limit * idleShare
	return idle + (limit-idle)*g.load(t)/100
}

// tempC runs from 35 C idle to 75 C at full load.
func (g *gpuSim) tempC(t time.Time) uint32 {
	if g.st.Temperature != nil {
		return uint32(*g.st.Temperature)
	}
	return uint32(math.Round(35 + 40*g.load(t)/100))
}

// memTempC: HBM runs a few degrees above the GPU die.
func (g *gpuSim) memTempC(t time.Time) uint32 {
	if g.st.MemoryTemperature != nil {
		return uint32(*g.st.MemoryTemperature)
	}
	return g.tempC(t) + 4
}

// energyStep is how finely the simulated energy counter integrates power.
// A driver's counter moves between its one-second utilization samples, so
// a reading a fraction of a second later has grown.
const energyStep = samplePeriod / 10

// energyMillijoules integrates power in energySteps up to now, so the
// counter moves with the node's clock and never goes back.
func (g *gpuSim) energyMillijoules() uint64 {
	now := g.n.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for t := g.energyAt.Add(energyStep); !t.After(now); t = t.Add(energyStep) {
		g.energyMJ += g.powerW(t) * energyStep.Seconds() * 1e3
		g.energyAt = t
	}
	return uint64(g.energyMJ)
}

func (g *gpuSim) idle() bool {
	_, isMIG := g.n.scenario.MIG[g.i]
	return !isMIG && len(g.n.holders[devKey{g.i, -1}]) == 0
}

func (g *gpuSim) clockEvents() uint64 {
	var bits uint64
	for _, name := range g.st.ClockEvents {
		bits |= clockEventBit(name)
	}
	if g.idle() {
		bits |= gonvml.ClocksEventReasonGpuIdle
	}
	return bits
}

// profile is what Apply fills the device's static calls from.
func (g *gpuSim) profile() nvmltest.Profile {
	p := nvmltest.Profile{
		PowerLimitMilliwatts: nvmltest.U32(uint32(g.limitW() * 1e3)),
		EnergyMillijoules:    g.energyMillijoules,
		SMMaxMHz:             nvmltest.U32(g.spec.smMax),
		MemMaxMHz:            nvmltest.U32(g.spec.memMax),
		MemClockMHz:          nvmltest.U32(g.spec.memMax),
		SMClockMHz:           nvmltest.U32(g.spec.smMax),
		ClockEvents:          nvmltest.U64(g.clockEvents()),
		Encoder:              nvmltest.U32(0),
		Decoder:              nvmltest.U32(0),
		PCIeReplays:          nvmltest.Int(0),
		ECC:                  &[2][2]uint64{},
		RemappedRows:         &[2]int{},
		RecoveryAction:       nvmltest.U32(0), // none
		Events:               gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError,
		Driver:               g.n.scenario.driverBranch(),
	}
	st := g.st
	if g.idle() {
		p.SMClockMHz = nvmltest.U32(idleSMClockMHz)
	}
	set := func(dst **uint32, v *int) {
		if v != nil {
			*dst = nvmltest.U32(uint32(*v))
		}
	}
	set(&p.SMMaxMHz, st.SMMaxClockMHz)
	set(&p.MemMaxMHz, st.MemMaxClockMHz)
	set(&p.SMClockMHz, st.SMClockMHz)
	set(&p.MemClockMHz, st.MemClockMHz)
	if e := st.ECC; e != nil {
		p.ECC = &[2][2]uint64{
			{uint64(e.CorrectedVolatile), uint64(e.CorrectedAggregate)},
			{uint64(e.UncorrectedVolatile), uint64(e.UncorrectedAggregate)},
		}
	}
	if r := st.RemappedRows; r != nil {
		p.RemappedRows = &[2]int{r.Correctable, r.Uncorrectable}
		p.RemapPending, p.RemapFailed = r.Pending, r.Failed
	}
	return p
}

// applyTelemetry serves GPU i's telemetry and health calls: the moving
// ones (power, temperatures, time in clock event reasons) computed at
// each call, the rest through nvmltest.Apply.
func (n *Node) applyTelemetry(dev *server.Device, i int) {
	g := &gpuSim{n: n, i: i, st: n.scenario.GPUState[i], spec: specOf(n.scenario.Model), energyAt: n.started}
	dev.GetPowerUsageFunc = func() (uint32, gonvml.Return) {
		return uint32(math.Round(g.powerW(n.now()) * 1e3)), gonvml.SUCCESS
	}
	dev.GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) {
		return g.tempC(n.now()), gonvml.SUCCESS
	}
	nvmltest.Apply(&dev.Device, g.profile())
	static := dev.GetFieldValuesFunc
	active := g.clockEvents()
	driver := n.scenario.driverBranch()
	dev.GetFieldValuesFunc = func(v []gonvml.FieldValue) gonvml.Return {
		ret := static(v)
		now := n.now()
		for k := range v {
			f := &v[k]
			if !nvmltest.Knows(driver, f.FieldId) {
				continue // answered as this driver answers an unknown field
			}
			switch {
			case f.FieldId == gonvml.FI_DEV_MEMORY_TEMP:
				nvmltest.PutU64(f, uint64(g.memTempC(now)))
			case clockEventField(f.FieldId) != 0:
				var ns uint64
				if active&clockEventField(f.FieldId) != 0 {
					ns = uint64(max(0, now.Sub(n.started)))
				}
				nvmltest.PutU64(f, ns)
			}
		}
		return ret
	}
}

// clockEventField is the reason bit whose cumulative time field id is.
func clockEventField(id uint32) uint64 {
	for _, r := range nvml.ClockEventReasons {
		if r.Field != 0 && r.Field == id {
			return r.Bit
		}
	}
	return 0
}

// scheduledXid is one scenario Xid, reported once its offset has passed.
type scheduledXid struct {
	after  time.Duration
	gpu    int
	gi, ci uint32
	code   uint64
	lost   bool // the GPU falls off the bus once the Xid is delivered
}

// xidSchedule hands scenario Xids to the mock event set as the node's
// clock passes their offsets. It runs on the event waits rather than a
// goroutine of its own, so a node on a fixed clock reports exactly the
// Xids at offset 0 and nothing runs after Close.
type xidSchedule struct {
	mu      sync.Mutex
	pending []scheduledXid
	losing  []scheduledXid // delivered Xids whose GPU is lost once they are read
	closed  atomic.Bool
}

// serveEvents installs a mock event set on srv that reports the
// scenario's Xid events.
func (n *Node) serveEvents(srv *server.Server) {
	var ev nvmltest.Events
	ev.Install(&srv.Interface)
	for _, d := range srv.Devices {
		dev := d.(*server.Device)
		ev.Track(dev, &dev.Device) // registrations held to the driver's rules
	}
	sched := &n.xids
	for i := 0; i < n.scenario.GPUs; i++ {
		for _, x := range n.scenario.GPUState[i].Xid {
			s := scheduledXid{after: time.Duration(x.After), gpu: i, gi: 0xFFFFFFFF, ci: 0xFFFFFFFF, code: uint64(x.Code), lost: x.Lost}
			if x.Instance != nil {
				s.gi, s.ci = uint32(MIGInstanceID(*x.Instance)), 0
			}
			sched.pending = append(sched.pending, s)
		}
	}
	sort.SliceStable(sched.pending, func(a, b int) bool { return sched.pending[a].after < sched.pending[b].after })
	wait := srv.EventSetWaitFunc
	srv.EventSetWaitFunc = func(set gonvml.EventSet, timeoutms uint32) (gonvml.EventData, gonvml.Return) {
		if !sched.closed.Load() {
			elapsed := n.now().Sub(n.started)
			sched.mu.Lock()
			for len(sched.pending) > 0 && sched.pending[0].after <= elapsed {
				x := sched.pending[0]
				sched.pending = sched.pending[1:]
				if x.gi != 0xFFFFFFFF && !n.scenario.MIGMonitor {
					// nvml.h, nvmlDeviceRegisterEvents: without MIG-monitor
					// privilege "only the events which affect all the
					// instances" are reported.
					continue
				}
				if x.code == 48 && x.gi == 0xFFFFFFFF {
					// A double-bit ECC error: the driver reports a
					// double-bit event and Xid 48.
					ev.InjectDoubleBit(srv.Devices[x.gpu])
					continue
				}
				ev.Inject(srv.Devices[x.gpu], x.code, x.gi, x.ci)
				if x.lost {
					sched.losing = append(sched.losing, x)
				}
			}
			sched.mu.Unlock()
		}
		data, ret := wait(set, timeoutms)
		if ret == gonvml.SUCCESS {
			n.loseAfter(sched, &ev, srv, data)
		}
		return data, ret
	}
}

// loseAfter takes a GPU off the bus once the Xid that loses it has been
// delivered: the driver reports Xid 79 and from then on the GPU answers
// GPU_IS_LOST, its event sets included.
func (n *Node) loseAfter(sched *xidSchedule, ev *nvmltest.Events, srv *server.Server, data gonvml.EventData) {
	sched.mu.Lock()
	defer sched.mu.Unlock()
	for k, x := range sched.losing {
		if data.Device == srv.Devices[x.gpu] && data.EventData == x.code {
			sched.losing = append(sched.losing[:k:k], sched.losing[k+1:]...)
			n.bus[x.gpu].Lose()
			ev.Lose(srv.Devices[x.gpu])
			return
		}
	}
}
