package dashboards_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// Values the test gives Grafana's built-in interval variables. $__interval
// is the scrape interval below; $__rate_interval is what Grafana computes
// for a data source whose scrape interval is 1s: max(interval + scrape
// interval, 4 * scrape interval).
var builtins = map[string]string{
	"__range":         "5m",
	"__range_s":       "300",
	"__range_ms":      "300000",
	"__interval":      "1s",
	"__interval_ms":   "1000",
	"__rate_interval": "4s",
}

const (
	shortFor    = "5s"
	shortWindow = "10s"
)

// keepAlerts are left with their own for: and windows. GPUSaturated
// compares a mean with 95 % while the simulated trainer runs at 90-99 %:
// over a window of seconds it would fire or not by chance.
var keepAlerts = map[string]bool{"GPUSaturated": true}

// expectedFiring is what the simulated node must trigger: the notebook's
// GPU sits idle, one of the trainer's GPUs is thermally throttled, the
// trainer keeps its GPUs busy with a quarter of their SMs active, and the
// inference server's GPU reports Xid 79 20 seconds after start, which
// fails it (GPUFailed, and GPUDeviceUnhealthy from NVML's side).
var expectedFiring = []map[string]string{
	{"alertname": "GPUAllocatedIdle", "namespace": "notebooks", "pod": "jupyter-alice", "container": "notebook"},
	{"alertname": "GPUThrottled", "namespace": "ml-training", "pod": "trainer-0", "gpu_id": "GPU-00000000-0000-4000-8000-000000000003"},
	{"alertname": "GPUBusyButUnderused", "namespace": "ml-training", "pod": "trainer-0", "container": "trainer"},
	{"alertname": "GPUCriticalXid", "namespace": "inference", "pod": "llm-server-0", "xid": "79"},
	{"alertname": "GPUFailed", "namespace": "inference", "pod": "llm-server-0", "reason": "xid"},
	{"alertname": "GPUDeviceUnhealthy", "namespace": "inference", "pod": "llm-server-0", "source": "nvml"},
}

// busy lists containers whose GPUs work: no idle alert may name them.
var busy = map[string]bool{"ml-training/trainer-0": true, "inference/llm-server-0": true}

// assignment is one choice of template variable values a user could make.
// A variable missing from it takes All (.*) when it offers All, and its
// first value otherwise.
type assignment struct {
	name   string
	values map[string]string
}

var assignments = []assignment{
	{"all", map[string]string{"node": "sim-node"}},
	{"notebooks", map[string]string{"node": "sim-node", "namespace": "notebooks", "pod": "jupyter-alice"}},
	{"ml-training", map[string]string{"node": "sim-node", "namespace": "ml-training", "pod": "trainer-0"}},
}

// TestDashboardsAgainstPrometheus runs the exporter on its simulated node
// under a real Prometheus that loads the project's rules, and evaluates
// every query of every dashboard and every recording rule: each must parse
// and return data. It also checks which alerts the simulated node fires.
func TestDashboardsAgainstPrometheus(t *testing.T) {
	promBin := tooltest.Require(t, "prometheus")
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	tmp := t.TempDir()

	// The simulated node's exporter; KUBE_GPU_EXPORTER_SIM_BINARY tests a
	// given build instead of the working tree's.
	exporter := tooltest.SimBinary(t)
	began := time.Now()

	exp := tooltest.StartExporter(t, exporter, tooltest.Scraped, "--simulate")
	exporterAddr := exp.Addr

	var ruleFiles []string
	for _, p := range ruleFilePaths(t) {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		short, err := shortenRules(src, shortFor, shortWindow, keepAlerts)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		dst := filepath.Join(tmp, "rules-"+filepath.Base(p))
		if err := os.WriteFile(dst, short, 0o644); err != nil {
			t.Fatal(err)
		}
		ruleFiles = append(ruleFiles, dst)
	}
	ruleFiles = append(ruleFiles, costRuleFile(t, tmp))
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: kube-gpu-exporter
    static_configs:
      - targets: [%q]
`, quoteAll(ruleFiles), exporterAddr)
	configPath := filepath.Join(tmp, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := tooltest.FreeAddr(t)
	promProc := start(t, filepath.Join(tmp, "prometheus.log"), promBin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(tmp, "tsdb"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	prom := newPromAPI(promAddr)

	eventually(t, 30*time.Second, "exporter scraped", func() error {
		select {
		case <-exp.Exited():
			t.Fatal("exporter exited") // its log follows
		default:
		}
		if err := promProc.exited(); err != nil {
			t.Fatal(err) // its log follows
		}
		if err := nonEmpty(prom.query(`up{job="kube-gpu-exporter"} == 1`)); err != nil {
			return fmt.Errorf("target up: %w", err)
		}
		for _, metric := range []string{"containerGpuDutyCycle", "nodeGpuDutyCycle", "nodeGpuCapacity", "containerGpuRequests"} {
			if err := nonEmpty(prom.query(metric)); err != nil {
				return fmt.Errorf("%s: %w", metric, err)
			}
		}
		return nil
	})

	// Every rule loads and evaluates without error.
	eventually(t, 20*time.Second, "rules evaluated", func() error {
		rules, err := prom.rules()
		if err != nil {
			return err
		}
		if len(rules) == 0 {
			return fmt.Errorf("no rules loaded")
		}
		for _, r := range rules {
			if r.Health != "ok" {
				return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
		return nil
	})

	// The idle notebook fires GPUAllocatedIdle within the shortened for:,
	// the Xid 79 the health alerts some seconds after it arrives.
	eventually(t, 45*time.Second, "expected alerts firing", func() error {
		alerts, err := prom.alerts()
		if err != nil {
			return err
		}
		for _, want := range expectedFiring {
			if !hasAlert(alerts, want, "firing") {
				return fmt.Errorf("no firing alert %v among %v", want, alerts)
			}
		}
		return nil
	})
	// Give the range windows a few more samples before the panels are read.
	time.Sleep(2 * time.Second)

	t.Run("alerts", func(t *testing.T) {
		alerts, err := prom.alerts()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts {
			name := a.Labels["alertname"]
			if a.State == "firing" && !mayFire(a.Labels) {
				t.Errorf("alert %s fires on the simulated node: %v", name, a.Labels)
			}
			if name == "GPUAllocatedIdle" && busy[a.Labels["namespace"]+"/"+a.Labels["pod"]] {
				t.Errorf("GPUAllocatedIdle %s for a busy GPU: %v", a.State, a.Labels)
			}
		}
		var firing []string
		for _, a := range alerts {
			if a.State == "firing" {
				firing = append(firing, a.Labels["alertname"]+" "+a.Labels["namespace"]+"/"+a.Labels["pod"]+" "+a.Labels["gpu_id"])
			}
		}
		sort.Strings(firing)
		t.Logf("firing: %s", strings.Join(firing, "; "))
	})

	t.Run("recording rules", func(t *testing.T) {
		n := 0
		for _, rf := range loadRuleFiles(t) {
			for _, g := range rf.Groups {
				for _, r := range g.Rules {
					if r.Record == "" {
						continue
					}
					n++
					if err := nonEmpty(prom.query(r.Expr)); err != nil {
						t.Errorf("recording rule %s: expr %q: %v", r.Record, r.Expr, err)
					}
					// Groups run each second in the test copy: the series
					// itself is there too.
					rec := r.Record
					eventually(t, 10*time.Second, "recorded series "+rec, func() error { return nonEmpty(prom.query(rec)) })
				}
			}
		}
		if n == 0 {
			t.Error("no recording rules found")
		}
		t.Logf("%d recording rules return data", n)
	})

	for _, path := range dashboardFiles(t) {
		d, _ := loadDashboard(t, path)
		for _, as := range assignments {
			t.Run(filepath.Base(path)+"/"+as.name, func(t *testing.T) {
				vals := resolveVariables(t, prom, d, as)
				checkPanels(t, prom, d, as.name, vals)
			})
		}
	}
	if out := os.Getenv("DASHBOARDS_PLOT"); out != "" {
		plotDutyCycle(t, prom, out, began)
	}
	for key := range expectations {
		if !expectationsMet[key] {
			t.Errorf("expectation %+v matches no panel query", key)
		}
	}
	t.Logf("end-to-end checks took %v after the build", time.Since(began).Round(time.Second))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func hasAlert(alerts []alert, want map[string]string, state string) bool {
	for _, a := range alerts {
		if a.State != state {
			continue
		}
		ok := true
		for k, v := range want {
			if a.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// resolveVariables evaluates the dashboard's variable queries in order,
// as Grafana does, and picks each variable's value: the assignment's (which
// the query must offer), All, or the first value offered.
func resolveVariables(t *testing.T, prom *promAPI, d *jsonDashboard, as assignment) map[string]string {
	t.Helper()
	vals := map[string]string{}
	for k, v := range builtins {
		vals[k] = v
	}
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			vals[v.Name] = "prometheus"
			continue
		case "query":
		default:
			t.Fatalf("variable %s: unexpected type %s", v.Name, v.Type)
		}
		selector, label, ok := parseLabelValues(v.Definition)
		if !ok {
			t.Fatalf("variable %s: cannot read %q", v.Name, v.Definition)
		}
		selector, err := substitute(selector, vals)
		if err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		matched, err := prom.series(selector)
		if err != nil {
			t.Fatalf("variable %s: selector %s: %v", v.Name, selector, err)
		}
		if len(matched) == 0 {
			t.Fatalf("variable %s: selector %s matches no series", v.Name, selector)
		}
		offered, err := prom.labelValues(selector, label)
		if err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		// The exporter runs without --cluster.name: no series has the
		// label, and All must still match everything.
		if label == "cluster_name" {
			if len(offered) != 0 {
				t.Errorf("variable %s offers %v though the exporter sets no cluster name", v.Name, offered)
			}
		} else if len(offered) == 0 {
			t.Fatalf("variable %s: label_values(%s, %s) offers nothing", v.Name, selector, label)
		}
		want, chosen := as.values[v.Name]
		switch {
		case chosen:
			if !contains(offered, want) {
				t.Fatalf("variable %s does not offer %q (offers %v)", v.Name, want, offered)
			}
			vals[v.Name] = want
		case v.IncludeAll:
			vals[v.Name] = v.AllValue
		default:
			vals[v.Name] = offered[0]
		}
	}
	return vals
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// checkPanels evaluates every query of every panel, rows included.
func checkPanels(t *testing.T, prom *promAPI, d *jsonDashboard, as string, vals map[string]string) {
	t.Helper()
	n, checked := 0, 0
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			expr, err := substitute(tg.Expr, vals)
			if err != nil {
				t.Errorf("panel %q target %s: %v", p.Title, tg.RefID, err)
				continue
			}
			n++
			ss, err := prom.query(expr)
			if err := nonEmpty(ss, err); err != nil {
				t.Errorf("panel %q target %s: %v\n%s", p.Title, tg.RefID, err, expr)
				continue
			}
			key := expectKey{d.UID, p.Title, tg.RefID, as}
			if check, ok := expectations[key]; ok {
				checked++
				expectationsMet[key] = true
				if err := check(ss); err != nil {
					t.Errorf("panel %q target %s: %v\n%s", p.Title, tg.RefID, err, expr)
				}
			}
			if tg.Range {
				if err := nonEmpty(prom.queryRange(expr, 20*time.Second, time.Second)); err != nil {
					t.Errorf("panel %q target %s over a range: %v\n%s", p.Title, tg.RefID, err, expr)
				}
			}
		}
	}
	t.Logf("%d queries return data, %d of them checked against the simulated node (variables %v)", n, checked, userVars(vals))
}

func userVars(vals map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range vals {
		if !strings.HasPrefix(k, "__") {
			out[k] = v
		}
	}
	return out
}

// TestShortenRules checks the test-only rewrite of rule files.
func TestShortenRules(t *testing.T) {
	src := []byte(`groups:
  - name: g
    interval: 1m
    rules:
      - record: r
        expr: sum(rate(x[5m]))
      - alert: Idle
        expr: avg_over_time(d[1h]) < 5 and max_over_time(d[1h:5m]) < 5
        for: 1h
        labels: {severity: warning}
      - alert: Saturated
        expr: avg_over_time(d[30m]) > 95
        for: 2h
`)
	out, err := shortenRules(src, "5s", "10s", map[string]bool{"Saturated": true})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{
		"interval: 1s",
		"sum(rate(x[5m]))", // recording rules keep their windows
		"avg_over_time(d[10s]) < 5 and max_over_time(d[10s:1s]) < 5",
		"for: 5s",
		"severity: warning",
		"avg_over_time(d[30m]) > 95", // kept
		"for: 2h",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("rewritten file lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "for: 1h") || strings.Contains(s, "[1h") {
		t.Errorf("idle alert not shortened:\n%s", s)
	}
	if _, err := shortenRules([]byte("groups: []"), "5s", "10s", nil); err == nil {
		t.Error("a file without groups must be an error")
	}
}

// What some panels must show for the simulated node described in
// docs/CONTRACT.tmp.md, beyond returning data.
type expectKey struct{ uid, panel, refID, assignment string }

var expectations = map[expectKey]func([]sample) error{
	{"kube-gpu-exporter-cluster", "Allocated but idle GPUs", "A", "notebooks"}:   rowsWhere("pod", "jupyter-alice", 1, func(v float64) bool { return v > 0 }, "idle hours > 0"),
	{"kube-gpu-exporter-cluster", "Allocated but idle GPUs", "B", "notebooks"}:   rowsWhere("pod", "jupyter-alice", 1, func(v float64) bool { return v >= 90 }, "idle share >= 90 %"),
	{"kube-gpu-exporter-cluster", "Allocated but idle GPUs", "B", "ml-training"}: rowsWhere("pod", "trainer-0", 4, func(v float64) bool { return v == 0 }, "idle share 0"),
	{"kube-gpu-exporter-cluster", "Allocated GPUs idle now", "A", "notebooks"}:   single(1),
	{"kube-gpu-exporter-cluster", "Allocated GPUs idle now", "A", "ml-training"}: single(0),
	{"kube-gpu-exporter-node", "GPUs", "A", "all"}:                               single(8),
	{"kube-gpu-exporter-node", "Held by containers", "A", "all"}:                 single(7),
	{"kube-gpu-exporter-node", "Devices", "A", "all"}:                            devicesTable,
	{"kube-gpu-exporter-node", "GPU health", "A", "all"}:                         healthTable(9, map[string]float64{simGPU(3) + " trainer-0": 1, simGPU(4) + " llm-server-0": 2}),
	{"kube-gpu-exporter-cluster", "Unhealthy GPUs", "A", "all"}:                  healthTable(2, map[string]float64{simGPU(3) + " trainer-0": 1, simGPU(4) + " llm-server-0": 2}),
	{"kube-gpu-exporter-workload", "Requested", "A", "ml-training"}:              rowsWhere("resource", "nvidia.com/gpu", 1, func(v float64) bool { return v == 4 }, "4 GPUs"),
	{"kube-gpu-exporter-workload", "Idle GPUs", "A", "notebooks"}:                single(1),
	{"kube-gpu-exporter-workload", "Idle GPUs", "A", "ml-training"}:              single(0),
	{"kube-gpu-exporter-node", "GPUs without GPM", "A", "all"}:                   single(0),
	{"kube-gpu-exporter-workload", "SM activity vs duty cycle per container", "A", "ml-training"}: rowsWhere("pod", "trainer-0", 4,
		func(v float64) bool { return v > 15 && v < 30 }, "SM active 15-30 %"),
	{"kube-gpu-exporter-workload", "SM activity vs duty cycle per container", "B", "ml-training"}: rowsWhere("pod", "trainer-0", 4,
		func(v float64) bool { return v > 80 }, "duty cycle above 80 %"),
}

var expectationsMet = map[expectKey]bool{}

func single(want float64) func([]sample) error {
	return func(ss []sample) error {
		if len(ss) != 1 || ss[0].Values[0] != want {
			return fmt.Errorf("want one value %g, got %v", want, ss)
		}
		return nil
	}
}

// rowsWhere wants n series with label=value, all satisfying ok, and no
// other series.
func rowsWhere(label, value string, n int, ok func(float64) bool, what string) func([]sample) error {
	return func(ss []sample) error {
		got := 0
		for _, s := range ss {
			if s.Metric[label] != value {
				return fmt.Errorf("unexpected series %v", s.Metric)
			}
			if !ok(s.Values[0]) {
				return fmt.Errorf("%v = %g, want %s", s.Metric, s.Values[0], what)
			}
			got++
		}
		if got != n {
			return fmt.Errorf("%d series with %s=%q, want %d", got, label, value, n)
		}
		return nil
	}
}

// devicesTable: eight GPUs; GPU 6 is time-sliced between two pods, GPU 7
// is held by nobody and still listed.
func devicesTable(ss []sample) error {
	rows := map[string][]string{}
	for _, s := range ss {
		rows[s.Metric["gpu_id"]] = append(rows[s.Metric["gpu_id"]], s.Metric["namespace"]+"/"+s.Metric["pod"])
	}
	if len(rows) != 8 {
		return fmt.Errorf("%d GPUs, want 8: %v", len(rows), rows)
	}
	gpu := func(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }
	if got := rows[gpu(7)]; len(got) != 1 || got[0] != "/" {
		return fmt.Errorf("free GPU 7: rows %v, want one without a pod", got)
	}
	if got := rows[gpu(6)]; len(got) != 2 {
		return fmt.Errorf("shared GPU 6: rows %v, want one per pod", got)
	}
	if got := rows[gpu(5)]; len(got) != 1 || got[0] != "notebooks/jupyter-alice" {
		return fmt.Errorf("GPU 5: rows %v, want notebooks/jupyter-alice", got)
	}
	return nil
}
