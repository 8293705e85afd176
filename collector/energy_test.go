package collector

import (
	"math"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// energyNode is a node with an exclusive GPU, a time-sliced one, an
// unallocated one and a MIG-enabled one, whose energy counters a test moves.
type energyNode struct {
	joules  map[string]float64
	holders map[string][]string // device UUID -> holder pods
	shares  map[string]float64  // pod -> share of per-process SM time
}

func (n *energyNode) view() *View {
	v := func(f float64) nvml.Value { return nvml.Value{V: f, OK: true} }
	devs := []nvml.Reading{
		{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-excl", Name: "H100"}, Telemetry: nvml.Telemetry{EnergyJoules: v(n.joules["GPU-excl"])}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-shared", Name: "H100"}, Telemetry: nvml.Telemetry{EnergyJoules: v(n.joules["GPU-shared"])}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-free", Name: "H100"}, Telemetry: nvml.Telemetry{EnergyJoules: v(n.joules["GPU-free"])}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-mig", Name: "H100", MIGEnabled: true}, Telemetry: nvml.Telemetry{EnergyJoules: v(n.joules["GPU-mig"])}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "MIG-3a", Name: "H100", ParentUUID: "GPU-mig", Profile: "3g.40gb"}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "MIG-1", Name: "H100", ParentUUID: "GPU-mig", Profile: "1g.10gb"}},
		{DeviceInfo: nvml.DeviceInfo{UUID: "MIG-3b", Name: "H100", ParentUUID: "GPU-mig", Profile: "3g.40gb"}},
	}
	view := &View{Devices: devs}
	for i := range view.Devices {
		d := &view.Devices[i]
		for _, pod := range n.holders[d.UUID] {
			u := Usage{Namespace: "ns", Pod: pod, Container: "c", Device: d, DutyCycle: 50, HasDutyCycle: true}
			if s, ok := n.shares[pod]; ok {
				u.Share, u.HasShare = s, true
			}
			view.Usage = append(view.Usage, u)
		}
	}
	return view
}

func TestEnergyLedgerAddsUpToTheGPUs(t *testing.T) {
	n := &energyNode{
		joules: map[string]float64{"GPU-excl": 1000, "GPU-shared": 1000, "GPU-free": 1000, "GPU-mig": 1000},
		holders: map[string][]string{
			"GPU-excl": {"a"}, "GPU-shared": {"b", "c"}, "MIG-3a": {"d"}, "MIG-3b": {"e"},
		},
		shares: map[string]float64{"a": 1, "b": 0.6, "c": 0.2, "d": 1, "e": 1},
	}
	l := newEnergyLedger(time.Hour, 100)
	t0 := time.Unix(1_800_000_000, 0)
	l.step(n.view(), t0) // first sight: nothing to give yet

	step := func(delta float64, at time.Time) (map[string]ContainerAccount, float64, float64) {
		for k := range n.joules {
			n.joules[k] += delta
		}
		ctrs, devs := l.step(n.view(), at)
		out := map[string]ContainerAccount{}
		for _, c := range ctrs {
			out[c.Pod] = c
		}
		var unalloc, unattr float64
		for _, d := range devs {
			unalloc += d.UnallocatedJ
			unattr += d.UnattributedJ
		}
		return out, unalloc, unattr
	}
	got, unalloc, unattr := step(700, t0.Add(10*time.Second))
	want := map[string]float64{"a": 700, "b": 420, "c": 140, "d": 300, "e": 300}
	for pod, j := range want {
		if math.Abs(got[pod].EnergyJoules-j) > 1e-9 {
			t.Errorf("%s: %v J, want %v", pod, got[pod].EnergyJoules, j)
		}
	}
	// GPU-free 700 + the unheld 1g instance 100; the rogue 20 % of GPU-shared.
	if math.Abs(unalloc-800) > 1e-9 || math.Abs(unattr-140) > 1e-9 {
		t.Errorf("unallocated %v, unattributed %v; want 800, 140", unalloc, unattr)
	}
	// GPU-seconds: whole 10, time-sliced 10/2, MIG 3g 10*3/7; used at 50 %.
	if a, b, d := got["a"].AllocatedSeconds, got["b"].AllocatedSeconds, got["d"].AllocatedSeconds; a != 10 || b != 5 || math.Abs(d-30.0/7) > 1e-9 {
		t.Errorf("allocated seconds a %v, b %v, d %v", a, b, d)
	}
	if u := got["a"].UsedSeconds; u != 5 {
		t.Errorf("used seconds a = %v, want 5", u)
	}

	// c leaves between scrapes; b is now alone on the GPU but without a
	// per-process share the energy is b's as the only holder reserving it.
	n.holders["GPU-shared"] = []string{"b"}
	delete(n.shares, "b")
	got, unalloc, unattr = step(400, t0.Add(20*time.Second))
	if got["c"].EnergyJoules != 140 {
		t.Errorf("c's counter moved after it left: %v", got["c"].EnergyJoules)
	}
	total := 0.0
	for _, c := range got {
		total += c.EnergyJoules
	}
	if all := 4 * (700 + 400.0); math.Abs(total+unalloc+unattr-all) > 1e-9 {
		t.Errorf("containers %v + unallocated %v + unattributed %v != the GPUs' %v", total, unalloc, unattr, all)
	}
	if got["b"].EnergyJoules != 420+400 {
		t.Errorf("b = %v, want 820", got["b"].EnergyJoules)
	}

	// A counter going back (a driver reload the sampler could not fold)
	// gives nothing rather than a negative amount.
	n.joules["GPU-excl"] = 10
	got, _, _ = step(0, t0.Add(30*time.Second))
	if got["a"].EnergyJoules != 1100 {
		t.Errorf("a after a counter reset = %v, want 1100", got["a"].EnergyJoules)
	}

	// c's rows go after the retention.
	got, _, _ = step(0, t0.Add(2*time.Hour))
	if _, ok := got["c"]; ok {
		t.Error("c kept past the retention")
	}
}

// A GPU without an energy counter (pre-Volta) still counts GPU-seconds,
// with no energy series.
func TestEnergyLedgerWithoutEnergy(t *testing.T) {
	d := nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-old", Name: "P100"}}
	v := &View{Devices: []nvml.Reading{d}}
	v.Usage = []Usage{{Namespace: "ns", Pod: "p", Container: "c", Device: &v.Devices[0], Share: 1, HasShare: true}}
	l := newEnergyLedger(time.Hour, 10)
	t0 := time.Unix(1_800_000_000, 0)
	l.step(v, t0)
	ctrs, devs := l.step(v, t0.Add(time.Minute))
	if len(ctrs) != 1 || ctrs[0].HasEnergy || ctrs[0].AllocatedSeconds != 60 {
		t.Fatalf("accounts = %+v", ctrs)
	}
	if len(devs) != 0 {
		t.Errorf("device energy accounts for a GPU without energy: %+v", devs)
	}
}

func TestMIGSlices(t *testing.T) {
	for profile, want := range map[string]float64{
		"1g.10gb": 1, "3g.40gb": 3, "7g.80gb": 7, "1g.10gb+me": 1, "1g.20gb": 1,
		"2c.4g.40gb": 2, "1c.3g.40gb": 1, "3c.7g.80gb": 3, "": 1, "bogus": 1, "xg.10gb": 1,
	} {
		if got := migSlices(profile); got != want {
			t.Errorf("migSlices(%q) = %v, want %v", profile, got, want)
		}
	}
}

// step is one accounting step followed by a scrape's read.
func (l *energyLedger) step(v *View, at time.Time) ([]ContainerAccount, []DeviceAccount) {
	l.account(v, at)
	return l.read(v)
}
