package scale

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// run is one exporter whose series are counted: a node and the flags.
type run struct {
	name, what string
	args       []string
}

// Every run sets the cluster labels, so that the label count is the
// largest a series can have.
var common = []string{"--nvml.poll-interval=500ms", "--nvml.duty-cycle-window=10s", "--cluster.name=fleet-1", "--cluster.id=0f9e3c2a"}

func scenarioRuns() []run {
	out := []run{{name: "builtin", what: "the built-in node (simulate/builtin.yaml): 8 GPUs, whole, shared and idle"}}
	for _, s := range scenarios {
		out = append(out, run{name: s.name, what: s.what, args: []string{"--simulate.scenario=" + s.path()}})
	}
	return out
}

// switchRuns are the built-in node under each switch that changes which
// series are served.
func switchRuns() []run {
	var out []run
	for _, f := range []string{"--no-collector.telemetry", "--no-collector.health", "--no-collector.events", "--no-collector.profiling", "--no-collector.chargeback", "--no-nvml.per-process", "--no-kube.enabled", "--metrics.exceptions-only"} {
		out = append(out, run{name: f, args: []string{f}})
	}
	out = append(out, run{name: "every --no-collector.*", args: []string{"--no-collector.telemetry", "--no-collector.health", "--no-collector.events", "--no-collector.profiling", "--no-collector.chargeback"}})
	out = append(out, run{name: "--metrics.exceptions-only --no-collector.profiling --no-collector.chargeback", args: []string{"--metrics.exceptions-only", "--no-collector.profiling", "--no-collector.chargeback"}})
	return out
}

// counted is one run's scrape.
type counted struct {
	run
	series   int
	byFamily map[string]int
	scrape   *scrape
}

// Event-driven families gain series as events happen (an Xid code on a
// device and its holders, an error reason), not with the node: they are
// left out of the counts and the budget, and docs/scale.md says so.
var eventFamilies = []string{"kube_gpu_xid_errors_total", "kube_gpu_container_xid_errors_total", "kube_gpu_exporter_errors_total"}

// measure starts every run (three at a time: a 2-core CI machine) and
// counts its series once they are complete.
func measure(t *testing.T, runs []run) []counted {
	t.Helper()
	bin := tooltest.SimBinary(t)
	out := make([]counted, len(runs))
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			e := tooltest.StartExporter(t, bin, tooltest.Scraped, append(slices.Clone(common), r.args...)...)
			sc, err := settled(e.Addr, !slices.Contains(r.args, "--no-kube.enabled"))
			if err != nil {
				t.Errorf("%s: %v\n%s", r.name, err, e.Log())
				return
			}
			out[i] = counted{run: r, scrape: sc, byFamily: map[string]int{}}
			for _, s := range sc.samples {
				if !slices.Contains(eventFamilies, s.family) {
					out[i].series++
					out[i].byFamily[s.family]++
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// settled scrapes addr until the Kubernetes API has synced (when in use)
// and three scrapes a poll apart serve the same series: GPM and
// chargeback series need a second NVML poll.
func settled(addr string, kube bool) (*scrape, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last []string
	same := 0
	for time.Now().Before(deadline) {
		time.Sleep(600 * time.Millisecond)
		sc, err := get(addr)
		if err != nil {
			return nil, err
		}
		if kube && sc.value("kube_gpu_exporter_up", "source", "kubernetes") != 1 {
			continue
		}
		keys := sc.keys()
		if slices.Equal(keys, last) {
			if same++; same == 2 {
				return sc, nil
			}
		} else {
			last, same = keys, 0
		}
	}
	return nil, fmt.Errorf("series of %s never settled", addr)
}

func get(addr string) (*scrape, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape: %s", resp.Status)
	}
	return parse(string(body))
}
