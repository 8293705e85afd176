package simulate

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// TestSimulatedTelemetry reads the built-in node through the sampler on a
// clock the test moves: defaults follow the load, gpuState overrides them,
// energy integrates power, and the scheduled Xid arrives after its offset.
func TestSimulatedTelemetry(t *testing.T) {
	var at atomic.Int64
	at.Store(1_800_000_000)
	now := func() time.Time { return time.Unix(at.Load(), 0) }
	n, err := Start(Builtin(), now)
	if err != nil {
		t.Fatal(err)
	}
	s := nvml.NewSampler(n.NVML, nvml.Config{Window: 10 * time.Second, Interval: 20 * time.Millisecond, Now: now, Telemetry: true, Health: true, Events: true})
	s.Poll()
	d := s.Snapshot().Devices
	trainer, hot, idle := d[0].Telemetry, d[3].Telemetry, d[5].Telemetry
	if !(trainer.PowerWatts.V > 600 && trainer.PowerWatts.V <= 700) || trainer.PowerLimitWatts.V != 700 {
		t.Errorf("trainer GPU power %v of %v W, want near the H100's 700 W limit", trainer.PowerWatts, trainer.PowerLimitWatts)
	}
	if !(idle.PowerWatts.V >= 104 && idle.PowerWatts.V < 113) || !(idle.TempGPU.V >= 35 && idle.TempGPU.V < 37) {
		t.Errorf("idle GPU at %v W, %v C; want about 105 W, 35 C", idle.PowerWatts, idle.TempGPU)
	}
	if hot.TempGPU.V != 88 || hot.TempMemory.V != 95 || hot.SMClockHz.V != 1095e6 || hot.SMClockMaxHz.V != 1980e6 {
		t.Errorf("throttled GPU: %+v", hot)
	}
	for _, r := range nvml.ClockEventReasons {
		want := r.Name == "sw_thermal_slowdown" || r.Name == "hw_thermal_slowdown"
		if got := hot.ClockEvents&r.Bit != 0; got != want {
			t.Errorf("throttled GPU reason %s active = %v", r.Name, got)
		}
	}
	if d[7].Telemetry.ClockEvents != 0 || d[2].Telemetry.ClockEvents != 0 {
		t.Errorf("busy GPUs report clock events %x, %x", d[2].Telemetry.ClockEvents, d[7].Telemetry.ClockEvents)
	}
	h := d[4].Health
	if !h.ECC[1][0].OK || h.ECC[1][0].V != 0 || !h.RemappedRows[1].OK || h.RemapFailed.V != 0 || !h.RecoveryAction.OK {
		t.Errorf("healthy GPU health = %+v", h)
	}
	if len(d[4].Xid) != 0 {
		t.Fatalf("Xid before its offset: %v", d[4].Xid)
	}
	e0 := d[0].Telemetry.EnergyJoules.V
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	at.Add(25)
	for deadline := time.Now().Add(5 * time.Second); len(s.Snapshot().Devices[4].Xid) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	d = s.Snapshot().Devices
	if got := d[0].Telemetry.EnergyJoules.V - e0; !(got > 25*600 && got <= 25*700) {
		t.Errorf("energy moved %v J in 25 s at %v W", got, d[0].Telemetry.PowerWatts.V)
	}
	if d[4].Xid[79] != 1 || len(d[3].Xid) != 0 {
		t.Errorf("Xids after the offset: GPU 4 %v, GPU 3 %v", d[4].Xid, d[3].Xid)
	}
	if secs := d[3].Telemetry.ClockEventSeconds; len(secs) == 0 {
		t.Errorf("no clock event times")
	}
	n.Close()
}

func TestGPUStateErrors(t *testing.T) {
	for yaml, want := range map[string]string{
		"gpus: 1\ngpuState:\n  1: {temperature: 50}\n":                                                                                    "gpuState.1: GPU 1 does not exist",
		"gpus: 1\ngpuState:\n  0: {temperature: 500}\n":                                                                                   "gpuState.0.temperature: 500 is out of range",
		"gpus: 1\ngpuState:\n  0: {powerWatts: -1}\n":                                                                                     "gpuState.0.powerWatts",
		"gpus: 1\ngpuState:\n  0: {powerLimitWatts: .nan}\n":                                                                              "gpuState.0.powerLimitWatts",
		"gpus: 1\ngpuState:\n  0: {smClockMHz: 2000, smMaxClockMHz: 1410}\n":                                                              "gpuState.0.smClockMHz: 2000 is above",
		"gpus: 1\ngpuState:\n  0: {clockEvents: [too_hot]}\n":                                                                             `gpuState.0.clockEvents[0]: unknown reason "too_hot"`,
		"gpus: 1\ngpuState:\n  0: {clockEvents: [gpu_idle, gpu_idle]}\n":                                                                  "gpuState.0.clockEvents[1]",
		"gpus: 1\ngpuState:\n  0: {ecc: {uncorrectedVolatile: 2}}\n":                                                                      "gpuState.0.ecc: an aggregate count",
		"gpus: 1\ngpuState:\n  0: {ecc: {correctedVolatile: -1}}\n":                                                                       "gpuState.0.ecc: counts cannot be negative",
		"gpus: 1\ngpuState:\n  0: {remappedRows: {uncorrectable: -2}}\n":                                                                  "gpuState.0.remappedRows",
		"gpus: 1\ngpuState:\n  0: {xid: [{after: -1s, code: 79}]}\n":                                                                      "gpuState.0.xid[0].after",
		"gpus: 1\ngpuState:\n  0: {xid: [{after: 1s, code: 0}]}\n":                                                                        "gpuState.0.xid[0].code",
		"gpus: 1\ngpuState:\n  0: {xid: [{after: 1s, code: 79, instance: 0}]}\n":                                                          "gpuState.0.xid[0].instance: GPU 0 has 0 MIG instances",
		"gpus: 1\ngpuState:\n  0: {xid: [{after: soon, code: 79}]}\n":                                                                     "invalid duration",
		"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.10gb]\ngpuState:\n  0: {xid: [{after: 1s, code: 79, instance: 0, lost: true}]}\n": "gpuState.0.xid[0].lost",
		"gpus: 1\ngpuState:\n  0: {fanSpeed: 3}\n":                                                                                        "field fanSpeed not found",
	} {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", yaml, err, want)
		}
	}
}

// startYAML parses and starts a scenario on the clock now; the node closes
// when the test ends (closing it earlier is allowed).
func startYAML(t *testing.T, yaml string, now func() time.Time) *Node {
	t.Helper()
	s, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(s, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// TestXidOnMIGInstance: an Xid with instance set names that instance's
// GPU and compute instance IDs, as the driver's event does, given
// MIG-monitor privilege; without it the instance's event is not reported.
func TestXidOnMIGInstance(t *testing.T) {
	const scenario = "model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.10gb, 3g.40gb]\ngpuState:\n  0:\n    xid: [{after: 1s, code: 43, instance: 1}]\n"
	at := time.Unix(1_800_000_000, 0)
	start := func(yaml string) (*Node, gonvml.EventSet) {
		n := startYAML(t, yaml, func() time.Time { return at })
		set, ret := n.NVML.EventSetCreate()
		if ret != gonvml.SUCCESS {
			t.Fatal(ret)
		}
		dev, _ := n.NVML.DeviceGetHandleByIndex(0)
		if ret := dev.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.SUCCESS {
			t.Fatal(ret)
		}
		return n, set
	}
	unprivileged, uset := start(scenario)
	n, set := start(scenario + "migMonitor: true\n")
	if _, ret := n.NVML.EventSetWait(set, 1); ret != gonvml.ERROR_TIMEOUT {
		t.Fatalf("event before its offset: %v", ret)
	}
	at = at.Add(time.Second)
	if ev, ret := unprivileged.NVML.EventSetWait(uset, 1); ret != gonvml.ERROR_TIMEOUT {
		t.Errorf("without MIG-monitor privilege an instance's event came: %+v %v", ev, ret)
	}
	ev, ret := n.NVML.EventSetWait(set, 1)
	if ret != gonvml.SUCCESS {
		t.Fatalf("no event after the offset: %v", ret)
	}
	uuid, _ := ev.Device.GetUUID()
	if uuid != UUID(0) || ev.EventData != 43 || ev.GpuInstanceId != uint32(MIGInstanceID(1)) || ev.ComputeInstanceId != 0 {
		t.Errorf("event = %s %+v", uuid, ev)
	}
	n.Close()
	at = at.Add(time.Hour)
	if _, ret := n.NVML.EventSetWait(set, 1); ret != gonvml.ERROR_TIMEOUT {
		t.Errorf("event after Close: %v", ret)
	}
}

// A node on an older driver branch serves no family whose NVML field the
// branch lacks, and counts nothing for it.
func TestDriverBranch(t *testing.T) {
	for branch, want := range map[string][2]bool{"R550": {false, false}, "R570": {true, false}, "R580": {true, true}, "": {true, true}} {
		at := time.Unix(1_800_000_000, 0)
		n := startYAML(t, "model: H100-SXM5-80GB\ngpus: 1\ndriver: "+branch+"\ngpuState:\n  0: {clockEvents: [sw_thermal_slowdown]}\n", func() time.Time { return at })
		smp := nvml.NewSampler(n.NVML, nvml.Config{Window: time.Minute, Now: func() time.Time { return at }, Telemetry: true, Health: true})
		smp.Poll()
		at = at.Add(5 * time.Second)
		smp.Poll()
		r := smp.Snapshot().Devices[0]
		thermal := false // the R580 field; power-cap time is older
		for i, cr := range nvml.ClockEventReasons {
			if cr.Field == gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN && r.Telemetry.ClockEventSeconds != nil {
				thermal = r.Telemetry.ClockEventSeconds[i].OK
			}
		}
		got := [2]bool{r.Health.RecoveryAction.OK, thermal}
		if got != want {
			t.Errorf("driver %q: recovery action, thermal slowdown time = %v, want %v", branch, got, want)
		}
		if len(smp.Errors()) != 0 {
			t.Errorf("driver %q: errors %v", branch, smp.Errors())
		}
	}
	if _, err := Parse([]byte("gpus: 1\ndriver: R470\n")); err == nil {
		t.Error("accepted driver R470")
	}
}

// A scenario's Xid 48 is a double-bit ECC error: the simulated driver
// reports a double-bit event and Xid 48, and the exporter counts it once.
func TestDoubleBitErrorCountsOnce(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	n := startYAML(t, "model: H100-SXM5-80GB\ngpus: 1\ngpuState:\n  0: {xid: [{after: 0s, code: 48}]}\n", func() time.Time { return at })
	smp := nvml.NewSampler(n.NVML, nvml.Config{Window: time.Minute, Interval: 20 * time.Millisecond, Now: func() time.Time { return at }, Telemetry: true, Health: true, Events: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); smp.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, "Xid 48 counted", func() bool {
		snap := smp.Snapshot()
		return snap != nil && len(snap.Devices) == 1 && snap.Devices[0].Xid[48] > 0
	})
	time.Sleep(200 * time.Millisecond) // room for a second count
	cancel()
	<-done
	if got := smp.Snapshot().Devices[0].Xid; got[48] != 1 || len(got) != 1 {
		t.Errorf("Xid counts %v, want {48: 1}", got)
	}
}

// TestLostGPU: an Xid with lost set is delivered, then the GPU answers
// GPU_IS_LOST on every call and its handle lookups, as after a real Xid
// 79. The sampler counts the Xid, reports the GPU lost and keeps reading
// the other one; its event goroutine backs off instead of spinning on the
// lost GPU's immediate answers.
func TestLostGPU(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	n := startYAML(t, "model: H100-SXM5-80GB\ngpus: 2\ngpuState:\n  0: {xid: [{after: 0s, code: 79, lost: true}]}\n", func() time.Time { return at })
	before, ret := n.NVML.DeviceGetHandleByIndex(0)
	if ret != gonvml.SUCCESS {
		t.Fatal(ret)
	}
	smp := nvml.NewSampler(n.NVML, nvml.Config{Window: time.Minute, Interval: 20 * time.Millisecond, Now: func() time.Time { return at }, Telemetry: true, Health: true, Events: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); smp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 5*time.Second, "GPU 0 lost", func() bool {
		snap := smp.Snapshot()
		return snap != nil && len(snap.Lost) == 1
	})
	snap := smp.Snapshot()
	if snap.Lost[0].UUID != UUID(0) || len(snap.Devices) != 1 || snap.Devices[0].UUID != UUID(1) {
		t.Fatalf("lost %v, devices %d (first %s): want GPU 0 lost and GPU 1 read", snap.Lost, len(snap.Devices), snap.Devices[0].UUID)
	}
	if _, ret := n.NVML.DeviceGetHandleByIndex(0); ret != gonvml.ERROR_GPU_IS_LOST {
		t.Errorf("handle of the lost GPU: %v", ret)
	}
	if _, ret := before.GetPowerUsage(); ret != gonvml.ERROR_GPU_IS_LOST {
		t.Errorf("power of the lost GPU through its old handle: %v", ret)
	}
	if _, ret := before.GetUUID(); ret != gonvml.ERROR_GPU_IS_LOST {
		t.Errorf("UUID of the lost GPU through its old handle: %v", ret)
	}
	if _, ret := n.NVML.DeviceGetHandleByIndex(1); ret != gonvml.SUCCESS {
		t.Errorf("GPU 1: %v", ret)
	}
	errs := smp.Errors()
	time.Sleep(300 * time.Millisecond)
	if got := smp.Errors(); fmt.Sprint(got) != fmt.Sprint(errs) {
		t.Errorf("errors counted while the GPU stays lost: %v, then %v", errs, got)
	}
}
