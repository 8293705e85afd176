package deploy_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// chargebackRun is how long Prometheus scrapes the simulated node. Minutes,
// so that the edges (the first scrape, the last sample before an
// evaluation, the simulated driver's 1 s energy samples) stay well under
// the 2 % the test allows.
const chargebackRun = 2 * time.Minute

// owed is what one pod of testdata/chargeback-node.yaml is owed per second,
// from the split rules alone: the part of a GPU held, the part used, and the
// GPU's power times the pod's share of it.
type owed struct {
	namespace, pod string
	part, used     float64 // GPU-seconds per second
	watts          float64
}

var chargebackNode = []owed{
	{"whole", "trainer", 1, 0.8, 400},                 // alone on a 400 W GPU, 80 % busy
	{"mig", "a", 4.0 / 7, 4.0 / 7 * 0.5, 210 * 4 / 7}, // 4g.40gb: 4 of 7 slices of 210 W
	{"mig", "b", 3.0 / 7, 3.0 / 7 * 0.2, 210 * 3 / 7},
	{"shared", "a", 0.5, 0.5 * 0.6, 280 * 60 / 80}, // time-sliced: half the time, 60 of 80 % SM time
	{"shared", "b", 0.5, 0.5 * 0.2, 280 * 20 / 80},
}

// The recording rules' GPU-hours and kWh per pod and per namespace match
// what the simulated node gave each container, within 2 %, with Prometheus
// scraping the exporter for a few minutes.
func TestChargebackAgainstSimulatedNode(t *testing.T) {
	promBin := tooltest.Require(t, "prometheus")
	if testing.Short() {
		t.Skip("runs for minutes; skipped with -short")
	}
	tmp := t.TempDir()
	exporter := startExporter(t, simBinary(t), "--simulate.scenario="+filepath.Join(root, "deploy", "testdata", "chargeback-node.yaml"))

	// The rules as shipped, evaluated each second instead of each minute.
	rules, err := os.ReadFile(filepath.Join(rulesDir, "chargeback.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(tmp, "chargeback.rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(strings.ReplaceAll(string(rules), "interval: 1m", "interval: 1s")), 0o644); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: kube-gpu-exporter
    static_configs: [{targets: [%q]}]
`, rulesPath, strings.TrimPrefix(exporter, "http://"))
	if err := os.WriteFile(filepath.Join(tmp, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := tooltest.FreeAddr(t)
	logf, err := os.Create(filepath.Join(tmp, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+filepath.Join(tmp, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(tmp, "tsdb"), "--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = logf, logf
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Kill()
		_ = prom.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	q := &promQuery{base: "http://" + promAddr}

	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, err := q.values(`up == 1`, time.Now()); err == nil && len(v) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Prometheus did not scrape the exporter within 30 s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(chargebackRun)
	at := time.Now()

	// Each recorded sample covers its counters from their first sample (0,
	// at the exporter's first scrape) to the evaluation: the truth is that
	// span times the rate owed.
	span := func(ns, pod string, rec string) float64 {
		t.Helper()
		first := q.scalar(t, fmt.Sprintf(`min_over_time(timestamp(kube_gpu_container_allocated_gpu_seconds_total{namespace=%q, pod=%q})[10m:1s])`, ns, pod), at)
		evaluated := q.scalar(t, fmt.Sprintf(`timestamp(%s{namespace=%q, pod=%q})`, rec, ns, pod), at)
		return evaluated - first
	}
	check := func(what string, got, want float64) {
		t.Helper()
		if want == 0 || math.Abs(got-want)/want > 0.02 {
			t.Errorf("%s = %.6g, want %.6g (±2 %%)", what, got, want)
		} else {
			t.Logf("%s = %.6g, want %.6g (%+.2f %%)", what, got, want, 100*(got-want)/want)
		}
	}

	perNS := map[string]*[3]float64{}
	for _, o := range chargebackNode {
		for _, c := range []struct {
			rec  string
			rate float64 // per second, in the rule's unit
		}{
			{"namespace_pod:kube_gpu_allocated_gpu_hours:increase1h", o.part / 3600},
			{"namespace_pod:kube_gpu_used_gpu_hours:increase1h", o.used / 3600},
			{"namespace_pod:kube_gpu_idle_gpu_hours:increase1h", (o.part - o.used) / 3600},
			{"namespace_pod:kube_gpu_energy_kwh:increase1h", o.watts / 3.6e6},
		} {
			sel := fmt.Sprintf(`%s{namespace=%q, pod=%q}`, c.rec, o.namespace, o.pod)
			want := c.rate * span(o.namespace, o.pod, c.rec)
			check(sel, q.scalar(t, sel, at), want)
			if c.rec == "namespace_pod:kube_gpu_idle_gpu_hours:increase1h" {
				continue
			}
			if perNS[o.namespace] == nil {
				perNS[o.namespace] = &[3]float64{}
			}
			i := map[string]int{"namespace_pod:kube_gpu_allocated_gpu_hours:increase1h": 0, "namespace_pod:kube_gpu_used_gpu_hours:increase1h": 1, "namespace_pod:kube_gpu_energy_kwh:increase1h": 2}[c.rec]
			perNS[o.namespace][i] += want
		}
	}
	for ns, want := range perNS {
		for i, rec := range []string{"namespace:kube_gpu_allocated_gpu_hours:increase1h", "namespace:kube_gpu_used_gpu_hours:increase1h", "namespace:kube_gpu_energy_kwh:increase1h"} {
			sel := fmt.Sprintf(`sum(%s{namespace=%q})`, rec, ns)
			check(sel, q.scalar(t, sel, at), want[i])
		}
	}

	// GPU 3, held by nobody, draws 70 W of unallocated energy; and the
	// namespaces' energy with the unallocated and unattributed energy makes
	// up the GPUs' energy.
	devSpan := q.scalar(t, `timestamp(cluster:kube_gpu_unallocated_energy_kwh:increase1h)`, at) -
		q.scalar(t, `min_over_time(timestamp(kube_gpu_unallocated_energy_joules_total{gpu_id="GPU-00000000-0000-4000-8000-000000000003"})[10m:1s])`, at)
	check("cluster:kube_gpu_unallocated_energy_kwh:increase1h", q.scalar(t, `sum(cluster:kube_gpu_unallocated_energy_kwh:increase1h)`, at), 70*devSpan/3.6e6)
	check("namespaces + unallocated + unattributed energy",
		q.scalar(t, `sum(namespace:kube_gpu_energy_kwh:increase1h) + sum(cluster:kube_gpu_unallocated_energy_kwh:increase1h) + sum(cluster:kube_gpu_unattributed_energy_kwh:increase1h)`, at),
		q.scalar(t, `sum(cluster:kube_gpu_energy_kwh:increase1h)`, at))
}

// promQuery runs instant queries against Prometheus' HTTP API.
type promQuery struct{ base string }

func (p *promQuery) values(expr string, at time.Time) ([]float64, error) {
	u := p.base + "/api/v1/query?" + url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1e3, 'f', 3, 64)}}.Encode()
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", expr, r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// scalar is the one value expr has at at.
func (p *promQuery) scalar(t *testing.T, expr string, at time.Time) float64 {
	t.Helper()
	v, err := p.values(expr, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 {
		t.Fatalf("%s: %d values, want 1", expr, len(v))
	}
	return v[0]
}
