package nvml

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// h100Profile is a healthy Hopper GPU: row remapping, no retired pages.
func h100Profile(energy *nvmltest.EnergyCounter) nvmltest.Profile {
	return nvmltest.Profile{
		PowerMilliwatts: nvmltest.U32(350_500), PowerLimitMilliwatts: nvmltest.U32(700_000),
		EnergyMillijoules: energy.Read,
		TempGPU:           nvmltest.U32(61), TempMemory: nvmltest.U32(70),
		SMClockMHz: nvmltest.U32(1980), MemClockMHz: nvmltest.U32(2619), SMMaxMHz: nvmltest.U32(1980), MemMaxMHz: nvmltest.U32(2619),
		ClockEvents:     nvmltest.U64(gonvml.ClocksEventReasonSwThermalSlowdown | gonvml.ClocksEventReasonSwPowerCap),
		ClockEventNanos: map[uint32]uint64{gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: 2_500_000_000},
		MemoryUtil:      nvmltest.U32(40), Encoder: nvmltest.U32(0), Decoder: nvmltest.U32(5),
		PCIeReplays:    nvmltest.Int(3),
		ECC:            &[2][2]uint64{{4, 9}, {0, 1}},
		RemappedRows:   &[2]int{2, 0},
		RecoveryAction: nvmltest.U32(0),
		Events:         gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError | gonvml.EventTypePState,
	}
}

func telemetrySampler(m *mockNode) *Sampler {
	return NewSampler(m.srv, Config{Window: time.Minute, Interval: 5 * time.Second, Now: m.clock.Now, Telemetry: true, Health: true, Events: true})
}

func TestSamplerTelemetryAndHealth(t *testing.T) {
	m := newMockNode(t, 2)
	var energy nvmltest.EnergyCounter
	energy.Set(1_000_000)
	ev := &nvmltest.Events{}
	ev.Install(&m.srv.Interface)
	nvmltest.Apply(&m.dev(0).Device, h100Profile(&energy))
	nvmltest.Apply(&m.dev(1).Device, nvmltest.Profile{}) // supports none of it
	s := telemetrySampler(m)
	s.Poll()

	r := byUUID(s.Snapshot())
	g := r[m.dev(0).UUID]
	tel, h := g.Telemetry, g.Health
	for name, c := range map[string]struct {
		got  Value
		want float64
	}{
		"power":       {tel.PowerWatts, 350.5},
		"limit":       {tel.PowerLimitWatts, 700},
		"energy":      {tel.EnergyJoules, 1000},
		"temp":        {tel.TempGPU, 61},
		"mem temp":    {tel.TempMemory, 70},
		"sm clock":    {tel.SMClockHz, 1980e6},
		"mem max":     {tel.MemClockMaxHz, 2619e6},
		"decoder":     {tel.Decoder, 0.05},
		"pcie":        {tel.PCIeReplays, 3},
		"ecc unc agg": {h.ECC[1][1], 1},
		"ecc cor vol": {h.ECC[0][0], 4},
		"remapped":    {h.RemappedRows[0], 2},
		"pending":     {h.RemapPending, 0},
		"recovery":    {h.RecoveryAction, 0},
	} {
		if !c.got.OK || c.got.V != c.want {
			t.Errorf("%s = %+v, want %v", name, c.got, c.want)
		}
	}
	if tel.ClockEvents != gonvml.ClocksEventReasonSwThermalSlowdown|gonvml.ClocksEventReasonSwPowerCap {
		t.Errorf("clock events = %b", tel.ClockEvents)
	}
	if got := tel.ClockEventSeconds[5]; !got.OK || got.V != 2.5 || ClockEventReasons[5].Name != "sw_thermal_slowdown" {
		t.Errorf("sw thermal slowdown time = %+v", got)
	}
	if tel.ClockEventSeconds[2].OK {
		t.Errorf("a reason the driver keeps no time for has one: %+v", tel.ClockEventSeconds[2])
	}
	if h.RetiredPages[0].OK {
		t.Error("retired pages read on a GPU with row remapping")
	}
	if g.Supported&FamilyRetiredPages != 0 || g.Supported&FamilyPower == 0 || g.Supported&FamilyXid == 0 {
		t.Errorf("supported = %b", g.Supported)
	}

	// The GPU that supports nothing but utilization samples has nothing
	// else, not zeros.
	other := r[m.dev(1).UUID]
	if other.Telemetry.PowerWatts.OK || other.Telemetry.EnergyJoules.OK || other.Health.ECC[1][1].OK || other.Supported != FamilyMemoryBandwidth {
		t.Errorf("unsupported readings present: %+v supported %b", other.Telemetry, other.Supported)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Errorf("NOT_SUPPORTED counted as errors: %v", errs)
	}
}

// A family answering NOT_SUPPORTED is not asked again until a rediscovery.
func TestSamplerUnsupportedAskedAgainOnlyAfterRediscovery(t *testing.T) {
	m := newMockNode(t, 1)
	var calls atomic.Int32
	m.dev(0).GetPowerUsageFunc = func() (uint32, gonvml.Return) {
		calls.Add(1)
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	nvmltest.Apply(&m.dev(0).Device, nvmltest.Profile{})
	nvmltest.NoEvents(&m.srv.Interface)
	s := telemetrySampler(m)
	for range 5 {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("GetPowerUsage called %d times in 5 polls, want 1", n)
	}
	m.clock.Advance(time.Minute) // rediscovery is due
	s.Poll()
	if n := calls.Load(); n != 2 {
		t.Fatalf("GetPowerUsage called %d times after rediscovery, want 2", n)
	}
	if got := s.Errors()["event_set"]; got != 1 {
		t.Errorf("event set failure counted %d times, want once", got)
	}
}

// UNKNOWN on one GPU of eight drops that reading of that GPU only.
func TestSamplerUnknownOnOneGPU(t *testing.T) {
	m := newMockNode(t, 8)
	var energy nvmltest.EnergyCounter
	for i := range 8 {
		if i == 3 {
			m.dev(i).GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { return 0, gonvml.ERROR_UNKNOWN }
		}
		nvmltest.Apply(&m.dev(i).Device, h100Profile(&energy))
	}
	nvmltest.NoEvents(&m.srv.Interface)
	s := telemetrySampler(m)
	s.Poll()
	s.Poll()
	n := 0
	for _, r := range s.Snapshot().Devices {
		if r.Telemetry.TempGPU.OK {
			n++
		}
		if !r.Telemetry.PowerWatts.OK {
			t.Errorf("%s lost its power reading", r.UUID)
		}
	}
	if n != 7 {
		t.Errorf("%d GPUs with a temperature, want 7", n)
	}
	if got := s.Errors()["unknown"]; got != 2 {
		t.Errorf("unknown errors = %d, want 2 (one per poll, asked again)", got)
	}
	if r := byUUID(s.Snapshot())[m.dev(3).UUID]; r.Supported&FamilyTemperature == 0 {
		t.Error("UNKNOWN marked the family unsupported")
	}
}

// Energy is a counter: a driver reload restarting NVML's counter does not
// make it go back.
func TestSamplerEnergyCounterReset(t *testing.T) {
	m := newMockNode(t, 1)
	var energy nvmltest.EnergyCounter
	energy.Set(5_000_000)
	nvmltest.Apply(&m.dev(0).Device, h100Profile(&energy))
	nvmltest.NoEvents(&m.srv.Interface)
	s := telemetrySampler(m)
	read := func() float64 {
		s.Poll()
		m.clock.Advance(5 * time.Second)
		return s.Snapshot().Devices[0].Telemetry.EnergyJoules.V
	}
	if got := read(); got != 5000 {
		t.Fatalf("energy = %v J", got)
	}
	energy.Add(1_500_000)
	if got := read(); got != 6500 {
		t.Fatalf("energy = %v J, want 6500", got)
	}
	energy.Set(200_000) // the driver was reloaded
	if got := read(); got != 6700 {
		t.Fatalf("energy after reset = %v J, want 6700 (6500 + 200)", got)
	}
	if got := s.Errors()["energy_counter_reset"]; got != 1 {
		t.Errorf("energy_counter_reset = %d", got)
	}
}

func TestSamplerXidEvents(t *testing.T) {
	m := newMockNode(t, 2)
	var energy nvmltest.EnergyCounter
	ev := &nvmltest.Events{}
	ev.Install(&m.srv.Interface)
	for i := range 2 {
		nvmltest.Apply(&m.dev(i).Device, h100Profile(&energy))
	}
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: 20 * time.Millisecond, Now: m.clock.Now, Telemetry: true, Health: true, Events: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	ev.Inject(m.dev(1), 79, 0xFFFFFFFF, 0xFFFFFFFF)
	ev.Inject(m.dev(1), 79, 0xFFFFFFFF, 0xFFFFFFFF)
	ev.Inject(m.dev(0), 13, 0xFFFFFFFF, 0xFFFFFFFF)
	testkit.Eventually(t, 5*time.Second, "events in a snapshot", func() bool {
		r := byUUID(s.Snapshot())
		return ev.Pending() == 0 && r[m.dev(1).UUID].Xid[79] == 2 && r[m.dev(0).UUID].Xid[13] == 1
	})
	r := byUUID(s.Snapshot())
	if got := r[m.dev(1).UUID].Xid[79]; got != 2 {
		t.Errorf("GPU 1 Xid 79 = %d, want 2", got)
	}
	if got := r[m.dev(0).UUID].Xid; got[13] != 1 || len(got) != 1 {
		t.Errorf("GPU 0 Xids = %v, want {13: 1}", got)
	}
	if r[m.dev(0).UUID].LastXid.IsZero() {
		t.Error("no time of the last Xid")
	}

	// A failing wait is counted and retried, not spun on.
	ev.FailWaits(gonvml.ERROR_UNKNOWN)
	testkit.Eventually(t, 5*time.Second, "wait error counted", func() bool { return s.Errors()["event_wait"] > 0 })
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not stop")
	}
	if !ev.Freed() {
		t.Error("event set not freed at shutdown")
	}
}

func TestEventMatchesMIGInstance(t *testing.T) {
	gpu := DeviceInfo{UUID: "GPU-a", GPUInstance: -1, ComputeInstance: -1, MIGEnabled: true}
	mig := DeviceInfo{UUID: "MIG-b", ParentUUID: "GPU-a", GPUInstance: 7, ComputeInstance: 0}
	onMIG := eventKey{gpu: "GPU-a", gi: 7, ci: 0}
	onGPU := eventKey{gpu: "GPU-a", gi: noInstance, ci: noInstance}
	if !eventMatches(onMIG, &mig) || eventMatches(onMIG, &gpu) {
		t.Error("an instance's event must count on the instance only")
	}
	if eventMatches(onGPU, &mig) || !eventMatches(onGPU, &gpu) {
		t.Error("a GPU-wide event must count on the GPU only")
	}
	if eventMatches(eventKey{gpu: "GPU-a", gi: 8, ci: 0}, &mig) {
		t.Error("another instance's event counted")
	}
}

// A GPU falling off the bus while the events goroutine waits: the wait's
// GPU_IS_LOST is not an event-set error, and the poll drops the GPU once.
func TestSamplerGPULostWhileWaitingForEvents(t *testing.T) {
	m, ev, gone := losableNode(t)
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: 20 * time.Millisecond, Now: m.clock.Now, Telemetry: true, Health: true, Events: true})
	stop := runSampler(s)
	ev.FailWaits(gonvml.ERROR_GPU_IS_LOST)
	gone.Store(true)
	testkit.Eventually(t, 5*time.Second, "lost GPU dropped", func() bool {
		snap := s.Snapshot()
		return len(snap.Devices) == 1 && len(snap.Lost) == 1
	})
	// A real driver answers every wait at once while the lost GPU is in
	// the set: the goroutine must not spin on it.
	before := ev.Waits()
	time.Sleep(1500 * time.Millisecond)
	if n := ev.Waits() - before; n > 3 {
		t.Errorf("%d waits in 1.5 s on a lost GPU: the events goroutine spins", n)
	}
	stop()
	if errs := s.Errors(); errs["event_wait"] != 0 || errs["gpu_lost"] != 1 {
		t.Errorf("errors = %v, want gpu_lost 1 and no event_wait", errs)
	}
}

// A GPU that delivers Xid events reports a double-bit ECC error as Xid 48
// too: only its Xid events are registered, so the error counts once. A GPU
// without Xid events has its double-bit errors registered instead.
func TestEventMaskCountsDoubleBitOnce(t *testing.T) {
	for _, c := range []struct {
		supported, want uint64
	}{
		{gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError | gonvml.EventTypePState, gonvml.EventTypeXidCriticalError},
		{gonvml.EventTypeXidCriticalError, gonvml.EventTypeXidCriticalError},
		{gonvml.EventTypeDoubleBitEccError | gonvml.EventTypeSingleBitEccError, gonvml.EventTypeDoubleBitEccError},
		{gonvml.EventTypePState, 0},
	} {
		if got := eventMask(c.supported); got != c.want {
			t.Errorf("eventMask(%#x) = %#x, want %#x", c.supported, got, c.want)
		}
	}
}
