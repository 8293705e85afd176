package collector

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// liveKubelet is a kubelet whose pods the test changes between steps.
type liveKubelet struct {
	mu    sync.Mutex
	snap  *podresources.Snapshot
	calls int
}

func (k *liveKubelet) Read(context.Context) (*podresources.Snapshot, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	return k.snap, nil
}

func (k *liveKubelet) Errors() map[string]uint64 { return nil }

// hold sets the pods: pod name -> GPU index, each pod one container
// holding one whole GPU.
func (k *liveKubelet) hold(pods map[string]int) {
	s := &podresources.Snapshot{Pods: len(pods)}
	for name, g := range pods {
		s.Containers = append(s.Containers, podresources.ContainerDevices{
			Namespace: "batch", Pod: name, Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{simulate.UUID(g)},
		})
	}
	k.mu.Lock()
	k.snap = s
	k.mu.Unlock()
}

// clockedNode is a simulated node of GPUs at a fixed power on a clock the
// test moves, its sampler polled and the collector's accounting step run
// by the test, as the exporter's loops would at each poll.
type clockedNode struct {
	at      time.Time
	sampler *nvml.Sampler
	kubelet *liveKubelet
	coll    *Collector
	watts   float64
}

func newClockedNode(t *testing.T, gpus int, watts float64) *clockedNode {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "model: H100-SXM5-80GB\ngpus: %d\ngpuState:\n", gpus)
	for g := 0; g < gpus; g++ {
		fmt.Fprintf(&b, "  %d: {powerWatts: %g}\n", g, watts)
	}
	sc, err := simulate.Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	n := &clockedNode{at: time.Unix(1_800_000_000, 0), kubelet: &liveKubelet{}, watts: watts}
	now := func() time.Time { return n.at }
	sim, err := simulate.Start(sc, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	n.kubelet.hold(nil)
	n.sampler = nvml.NewSampler(sim.NVML, nvml.Config{Window: time.Minute, Interval: time.Second, Now: now, Telemetry: true})
	n.coll = New(Config{NodeName: "n", Telemetry: true, Chargeback: true, Now: now}, n.sampler, n.kubelet, nil)
	n.step()
	return n
}

// step moves the clock one second and runs one poll and one accounting
// step.
func (n *clockedNode) step() {
	n.at = n.at.Add(time.Second)
	n.sampler.Poll()
	n.coll.Account(context.Background())
}

// scrape returns what a scrape reads of the containers' counters, by pod.
func (n *clockedNode) scrape() map[string]ContainerAccount {
	v, _ := n.coll.Gather(context.Background())
	out := map[string]ContainerAccount{}
	for _, a := range v.Accounts {
		out[a.Pod] = a
	}
	return out
}

// A container that lives 10 s between two scrapes 30 s apart is billed for
// its 10 s: the ledger moves at each poll, not at each scrape (accounted at
// the scrape, it was billed nothing).
func TestShortContainerBilledBetweenScrapes(t *testing.T) {
	n := newClockedNode(t, 1, 300)
	if got := n.scrape(); len(got) != 0 {
		t.Fatalf("accounts before any pod: %v", got)
	}
	for s := 1; s <= 30; s++ {
		if s == 10 {
			n.kubelet.hold(map[string]int{"short": 0})
		}
		if s == 20 {
			n.kubelet.hold(nil)
		}
		n.step()
	}
	a, ok := n.scrape()["short"]
	if !ok {
		t.Fatal("the short container was never billed")
	}
	wantJ, wantS := 300.0*10, 10.0
	if math.Abs(a.EnergyJoules-wantJ) > 0.02*wantJ || math.Abs(a.AllocatedSeconds-wantS) > 0.02*wantS {
		t.Errorf("billed %.1f J and %.2f GPU-seconds, want %.0f J and %.0f s within 2 %%", a.EnergyJoules, a.AllocatedSeconds, wantJ, wantS)
	}
}

// Scrapers read the counters, never move them: two scraping at different
// intervals read the same totals at any instant, and the same as a node
// nobody scraped.
func TestScrapersReadTheSameTotals(t *testing.T) {
	a, b, quiet := newClockedNode(t, 2, 300), newClockedNode(t, 2, 300), newClockedNode(t, 2, 300)
	for s := 1; s <= 120; s++ {
		pods := map[string]int{"steady": 0}
		if s%40 < 25 {
			pods[fmt.Sprintf("batch-%d", s/40)] = 1
		}
		for _, n := range []*clockedNode{a, b, quiet} {
			n.kubelet.hold(pods)
			n.step()
		}
		if s%5 == 0 {
			a.scrape()
		}
		if s%17 == 0 {
			b.scrape()
		}
	}
	ra, rb, rq := a.scrape(), b.scrape(), quiet.scrape()
	if fmt.Sprint(ra) != fmt.Sprint(rb) || fmt.Sprint(ra) != fmt.Sprint(rq) {
		t.Fatalf("totals differ:\nevery 5s:  %v\nevery 17s: %v\nunscraped: %v", ra, rb, rq)
	}
	if len(ra) != 5 { // steady and batch-0 to batch-3
		t.Fatalf("%d containers billed, want 5: %v", len(ra), ra)
	}
}

// TestChurnAgainstGroundTruth runs ten minutes of pods living 10-60 s,
// starting and ending anywhere between two polls, on four GPUs, scraped
// every 30 s. Each pod is owed its GPU's energy over its life. Billed at
// the poll after each change, each pod is within one poll of its life, the
// error has no direction, and the node's totals are within 2 %; the ledger
// still adds up to the GPUs' energy exactly.
func TestChurnAgainstGroundTruth(t *testing.T) {
	const gpus, watts, run = 4, 300.0, 600
	n := newClockedNode(t, gpus, watts)
	start := n.at
	type life struct {
		gpu      int
		from, to float64 // seconds after start
	}
	rng := rand.New(rand.NewPCG(7, 11))
	lives := map[string]life{}
	for g := 0; g < gpus; g++ {
		at := rng.Float64() * 5
		for k := 0; ; k++ {
			l := life{gpu: g, from: at, to: at + 10 + rng.Float64()*50}
			if l.to > run-5 {
				break
			}
			lives[fmt.Sprintf("gpu%d-pod%d", g, k)] = l
			at = l.to + rng.Float64()*5
		}
	}
	e0 := n.scrape()
	if len(e0) != 0 {
		t.Fatalf("accounts before any pod: %v", e0)
	}
	devStart := n.deviceEnergy(t)
	for s := 1; s <= run; s++ {
		pods := map[string]int{}
		for name, l := range lives {
			if el := n.at.Add(time.Second).Sub(start).Seconds(); el >= l.from && el < l.to {
				pods[name] = l.gpu
			}
		}
		n.kubelet.hold(pods)
		n.step()
		if s%30 == 0 {
			n.scrape()
		}
	}
	got := n.scrape()
	var owedJ, billedJ, owedS, billedS float64
	for name, l := range lives {
		a := got[name]
		want := watts * (l.to - l.from)
		owedJ, billedJ = owedJ+want, billedJ+a.EnergyJoules
		owedS, billedS = owedS+(l.to-l.from), billedS+a.AllocatedSeconds
		if math.Abs(a.EnergyJoules-want) > watts*1.01 {
			t.Errorf("%s lived %.1f s: billed %.1f J, owed %.1f J (more than one poll off)", name, l.to-l.from, a.EnergyJoules, want)
		}
	}
	t.Logf("%d pods: billed %.0f J of %.0f owed (%+.2f %%), %.0f GPU-seconds of %.0f (%+.2f %%)",
		len(lives), billedJ, owedJ, 100*(billedJ-owedJ)/owedJ, billedS, owedS, 100*(billedS-owedS)/owedS)
	if math.Abs(billedJ-owedJ) > 0.02*owedJ || math.Abs(billedS-owedS) > 0.02*owedS {
		t.Errorf("node totals: billed %.0f J and %.0f GPU-seconds, owed %.0f J and %.0f s: more than 2 %% off", billedJ, billedS, owedJ, owedS)
	}
	// The invariant: containers + unallocated + unattributed = the GPUs'
	// energy since the first step.
	v, _ := n.coll.Gather(context.Background())
	var ledger float64
	for _, a := range v.Accounts {
		ledger += a.EnergyJoules
	}
	for _, d := range v.DeviceAccounts {
		ledger += d.UnallocatedJ + d.UnattributedJ
	}
	if spent := n.deviceEnergy(t) - devStart; math.Abs(ledger-spent) > 1e-6*spent {
		t.Errorf("ledger holds %.3f J, the GPUs spent %.3f J", ledger, spent)
	}
}

// deviceEnergy is the GPUs' energy counters summed, as the sampler last
// read them.
func (n *clockedNode) deviceEnergy(t *testing.T) float64 {
	t.Helper()
	snap := n.sampler.Snapshot()
	var j float64
	for _, d := range snap.Devices {
		if !d.Telemetry.EnergyJoules.OK {
			t.Fatalf("GPU %s has no energy reading", d.UUID)
		}
		j += d.Telemetry.EnergyJoules.V
	}
	return j
}
