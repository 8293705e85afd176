package simulate

import (
	"math"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// pollProfiling polls a scenario's node four times, 5 s apart, with the
// profiling metrics on, and returns the readings by UUID.
func pollProfiling(t *testing.T, s *Scenario) (*Node, time.Time, map[string]nvml.Reading) {
	t.Helper()
	at := time.Unix(1_800_000_000, 0)
	clock := at
	now := func() time.Time { return clock }
	n, err := Start(s, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	smp := nvml.NewSampler(n.NVML, nvml.Config{Window: time.Minute, Now: now, Profiling: true})
	for k := 0; k < 4; k++ {
		smp.Poll()
		clock = clock.Add(5 * time.Second)
	}
	byID := map[string]nvml.Reading{}
	for _, d := range smp.Snapshot().Devices {
		byID[d.UUID] = d
	}
	return n, at, byID
}

// wantGPM is the sampler's window mean of a GPM metric over the three
// intervals between four polls 5 s apart, in the exposed unit.
func wantGPM(n *Node, gpu, mig, metric int, at time.Time) float64 {
	var sum float64
	for k := 1; k < 4; k++ {
		from := at.Add(time.Duration(k-1) * 5 * time.Second)
		v, _ := n.GPM(gpu, mig, nvml.ProfilingMetrics[metric].ID, from, from.Add(5*time.Second))
		sum += v
	}
	return sum / 3 * nvml.ProfilingMetrics[metric].Scale
}

func TestBuiltinServesGPMOnWholeGPUs(t *testing.T) {
	n, at, byID := pollProfiling(t, Builtin())
	for i := 0; i < 8; i++ {
		d := byID[UUID(i)]
		if len(d.Profiling) != len(nvml.ProfilingMetrics) {
			t.Fatalf("GPU %d has %d profiling values, want all %d", i, len(d.Profiling), len(nvml.ProfilingMetrics))
		}
		for m, v := range d.Profiling {
			if want := wantGPM(n, i, -1, m, at); !v.OK || math.Abs(v.V-want) > 1e-9*math.Max(1, want) {
				t.Errorf("GPU %d %s = %+v, want %v", i, nvml.ProfilingMetrics[m].Name, v, want)
			}
		}
	}
	// The trainer is busy but underused: over 80 % duty cycle, under 30 %
	// SM activity; the inference server on GPU 4 has the defaults.
	if tr := byID[UUID(0)]; tr.DutyCycle < 85 || tr.Profiling[nvml.ProfSMActive].V > 0.3 {
		t.Errorf("trainer duty %v, SM active %v; want busy but underused", tr.DutyCycle, tr.Profiling[nvml.ProfSMActive].V)
	}
	inf := byID[UUID(4)]
	if got, want := inf.Profiling[nvml.ProfSMActive].V, inf.DutyCycle/100*defaultSMActive/100; math.Abs(got-want) > 0.05 {
		t.Errorf("inference SM active %v, want about %v", got, want)
	}
	// Only the trainer spans GPUs, so only its GPUs carry NVLink traffic.
	if byID[UUID(0)].Profiling[9].V == 0 || byID[UUID(4)].Profiling[9].V != 0 {
		t.Errorf("NVLink tx: trainer %v, inference %v", byID[UUID(0)].Profiling[9], byID[UUID(4)].Profiling[9])
	}
}

// On a time-sliced GPU the device's SM activity is the sum over its
// holders' processes, so each sharer's part of it, as the exporter
// attributes it by per-process SM time, is the sharer's own.
func TestTimeSlicedGPMIsTheSumOfHolders(t *testing.T) {
	n := &Node{scenario: Builtin(), holders: map[devKey][]holder{}}
	n.buildHolders()
	at := time.Unix(1_800_000_000, 0)
	hs := n.holders[devKey{6, -1}]
	if len(hs) != 2 {
		t.Fatalf("GPU 6 has %d holders, want 2", len(hs))
	}
	got, ok := n.gpmAt(devKey{6, -1}, gonvml.GPM_METRIC_SM_UTIL, at)
	a, b := hs[0].at(at), hs[1].at(at)
	if want := (a + b) * defaultSMActive / 100; !ok || math.Abs(got-want) > 1e-9 {
		t.Fatalf("GPU 6 SM active %v, want %v", got, want)
	}
	if share := got * a / (a + b); math.Abs(share-a*defaultSMActive/100) > 1e-9 {
		t.Errorf("shared-a's part %v, want its own %v", share, a*defaultSMActive/100)
	}
}

func TestMIGInstancesServeGPM(t *testing.T) {
	s, err := Load("../examples/mig-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, at, byID := pollProfiling(t, s)
	d := byID[MIGUUID(0, 3)]
	for m, v := range d.Profiling {
		name := nvml.ProfilingMetrics[m].Name
		if strings.HasPrefix(name, "pcie") || strings.HasPrefix(name, "nvlink") {
			if v.OK {
				t.Errorf("MIG instance reports %s %v; it belongs to the whole GPU", name, v)
			}
			continue
		}
		if want := wantGPM(n, 0, 3, m, at); !v.OK || math.Abs(v.V-want) > 1e-9 {
			t.Errorf("instance 0/3 %s = %+v, want %v", name, v, want)
		}
	}
	if d.DutyCycle <= 100*d.Profiling[nvml.ProfSMActive].V {
		t.Errorf("instance 0/3 duty %v not above its SM activity %v", d.DutyCycle, d.Profiling[nvml.ProfSMActive].V)
	}
}

func TestPreHopperServesNoGPM(t *testing.T) {
	s, err := Parse([]byte("model: A100-SXM4-80GB\ngpus: 1\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n        utilization: {mean: 50}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n, _, byID := pollProfiling(t, s)
	if d := byID[UUID(0)]; d.Profiling != nil || !d.HasDutyCycle {
		t.Errorf("A100 reading = %+v; want a duty cycle and no profiling", d)
	}
	lib := n.NVML
	dev, _ := lib.DeviceGetHandleByIndex(0)
	if sup, ret := lib.GpmQueryDeviceSupport(dev); ret != gonvml.SUCCESS || sup.IsSupportedDevice != 0 {
		t.Errorf("GpmQueryDeviceSupport = %+v, %v; want not supported", sup, ret)
	}
	smp, _ := lib.GpmSampleAlloc()
	if ret := lib.GpmSampleGet(dev, smp); ret != gonvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GpmSampleGet on an A100 = %v, want NOT_SUPPORTED", ret)
	}
}

func TestGPMProfileErrors(t *testing.T) {
	pod := func(gpm string) string {
		return "gpus: 1\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n        gpm: " + gpm + "\n"
	}
	tests := []struct{ yaml, want string }{
		{pod("{smActive: 120}"), "pods[0].containers[0].gpm.smActive: 120 is out of range 0-100"},
		{pod("{dramActive: -1}"), "gpm.dramActive: -1 is out of range"},
		{pod("{smActive: 20, smOccupancy: 30}"), "gpm.smOccupancy: 30 is above smActive 20"},
		{pod("{smActive: 10}"), ""}, // defaults follow smActive
		{pod("{tensorActive: 90}"), "gpm.tensorActive: 90 is above smActive 85"},
		{pod("{smAktive: 10}"), "line 9"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if tt.want == "" {
			if err != nil {
				t.Errorf("Parse(%q) = %v", tt.yaml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tt.yaml, err, tt.want)
		}
	}
}
