package dashboards_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/dashboards"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

var update = flag.Bool("update", false, "rewrite the dashboard JSON files from the Go definitions")

// TestGenerated keeps the committed JSON files equal to the Go definitions.
func TestGenerated(t *testing.T) {
	for _, def := range dashboards.All() {
		want, err := dashboards.Marshal(def.Dashboard)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dashboardsDir(), def.File)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run: go test ./dashboards -run TestGenerated -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from its Go definition; run: go test ./dashboards -run TestGenerated -update", def.File)
		}
		embedded, err := dashboards.Files.ReadFile(def.File)
		if err != nil || !bytes.Equal(embedded, got) {
			t.Errorf("%s: embedded copy differs from the file (err %v)", def.File, err)
		}
	}
}

// TestStructure checks what Grafana needs to import the dashboards and use
// them with any Prometheus data source.
func TestStructure(t *testing.T) {
	uids := map[string]string{}
	for _, path := range dashboardFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			d, generic := loadDashboard(t, path)
			if d.UID == "" || d.Title == "" {
				t.Fatalf("uid %q, title %q: both are required", d.UID, d.Title)
			}
			if len(d.UID) > 40 {
				t.Errorf("uid %q is longer than Grafana's 40 characters", d.UID)
			}
			if other, dup := uids[d.UID]; dup {
				t.Errorf("uid %q also used by %s", d.UID, other)
			}
			uids[d.UID] = name
			if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
				t.Errorf("schemaVersion %d: want one Grafana 10-12 reads without migration (36-41)", d.SchemaVersion)
			}

			ds := d.variable("datasource")
			if ds == nil || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
				t.Fatalf("want a template variable datasource of type datasource, query prometheus; got %+v", ds)
			}
			required := []string{"cluster", "namespace"}
			switch {
			case strings.Contains(name, "workload"):
				required = append(required, "pod")
			case strings.Contains(name, "cost"):
				// Chargeback is per namespace and pod: the recording rules
				// keep no node.
			default:
				required = append(required, "node")
			}
			for _, v := range required {
				if d.variable(v) == nil {
					t.Errorf("missing template variable %q", v)
				}
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
					t.Errorf("variable %s: datasource %+v, want uid ${datasource}", v.Name, v.Datasource)
				}
				if _, _, ok := parseLabelValues(v.Definition); !ok {
					t.Errorf("variable %s: definition %q is not label_values(selector, label)", v.Name, v.Definition)
				}
				if v.IncludeAll && v.AllValue != ".*" {
					t.Errorf("variable %s: allValue %q; want .* so that =~ also matches series without the label", v.Name, v.AllValue)
				}
			}
			if c := d.variable("cluster"); c != nil && (!c.IncludeAll || !strings.Contains(c.Definition, "cluster_name")) {
				t.Errorf("cluster variable must offer All and read cluster_name: %+v", c)
			}

			// No concrete data source UID anywhere in the file.
			walkDatasources(generic, func(ref map[string]any) {
				uid, _ := ref["uid"].(string)
				typ, _ := ref["type"].(string)
				if typ == "grafana" && uid == "-- Grafana --" {
					return // the built-in annotation source
				}
				if uid != "${datasource}" {
					t.Errorf("hard-coded data source %v", ref)
				}
			})

			panels := allPanels(d.Panels)
			ids := map[int]bool{}
			queries := 0
			for _, p := range panels {
				if ids[p.ID] {
					t.Errorf("panel id %d used twice", p.ID)
				}
				ids[p.ID] = true
				if p.Type == "row" {
					continue
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
					continue
				}
				if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
					t.Errorf("panel %q: datasource %+v", p.Title, p.Datasource)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					queries++
					if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
						t.Errorf("panel %q target %s: datasource %+v", p.Title, tg.RefID, tg.Datasource)
					}
					if tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
					}
					refs[tg.RefID] = true
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
					}
					checkUnit(t, p, tg)
					checkMatchers(t, name, p, tg)
				}
			}
			if queries < 10 {
				t.Errorf("only %d queries", queries)
			}
		})
	}
}

// checkUnit: duty cycle values are shown in percent, memory amounts in bytes
// and memory shares in percent (memory clocks and temperatures are not
// memory amounts). Counts (count(), count_over_time), time
// spent in a state (sums of "< bool" comparisons) and the exporter's own
// metrics (joined to a node through GPU metrics) are exempt.
func checkUnit(t *testing.T, p *jsonPanel, tg jsonTarget) {
	t.Helper()
	e := tg.Expr
	if strings.Contains(e, "count") || strings.Contains(e, " bool ") || strings.Contains(e, "kube_gpu_exporter_") {
		return
	}
	unit := p.columnUnit(tg)
	switch {
	case strings.Contains(e, "Gpumemory") || strings.Contains(e, "memory_used_bytes"):
		want := "bytes"
		if strings.Contains(e, "100 *") {
			want = "percent"
		}
		if unit != want {
			t.Errorf("panel %q target %s (memory): unit %q, want %q", p.Title, tg.RefID, unit, want)
		}
		if want == "percent" {
			checkThresholds(t, p, dashboards.MemoryNearlyFull)
		}
	case strings.Contains(e, "DutyCycle"):
		if unit != "percent" {
			t.Errorf("panel %q target %s (duty cycle): unit %q, want percent", p.Title, tg.RefID, unit)
		}
		checkThresholds(t, p, dashboards.IdleDutyCycle, dashboards.SaturatedDutyCycle)
	}
}

// checkThresholds wants the alert thresholds among the panel's steps (the
// defaults, or a table's overrides).
func checkThresholds(t *testing.T, p *jsonPanel, want ...float64) {
	t.Helper()
	have := map[float64]bool{}
	if th := p.FieldConfig.Defaults.Thresholds; th != nil {
		for _, s := range th.Steps {
			if s.Value != nil {
				have[*s.Value] = true
			}
		}
	}
	for _, o := range p.FieldConfig.Overrides {
		for _, prop := range o.Properties {
			if prop.ID != "thresholds" {
				continue
			}
			var th struct {
				Steps []struct {
					Value *float64 `json:"value"`
				} `json:"steps"`
			}
			_ = json.Unmarshal(prop.Value, &th)
			for _, s := range th.Steps {
				if s.Value != nil {
					have[*s.Value] = true
				}
			}
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("panel %q: no threshold step at %g", p.Title, w)
		}
	}
}

var selectorRe = regexp.MustCompile(`(\w*)\{([^}]*)\}`)

// checkMatchers: every selector filters by the dashboard's variables, with
// cluster_name matched as a regex so that All (.*) also matches series
// without the label.
func checkMatchers(t *testing.T, file string, p *jsonPanel, tg jsonTarget) {
	t.Helper()
	for _, sm := range selectorRe.FindAllStringSubmatch(tg.Expr, -1) {
		body := sm[2]
		if !strings.Contains(body, `cluster_name=~"$cluster"`) {
			t.Errorf("panel %q target %s: selector %s lacks cluster_name=~\"$cluster\"", p.Title, tg.RefID, sm[0])
		}
		metric := sm[1] + body
		if strings.Contains(metric, "nodeGpu") || strings.Contains(metric, "containerGpu") {
			if strings.Contains(file, "workload") {
				if !strings.Contains(body, `namespace="$namespace"`) {
					t.Errorf("panel %q target %s: selector %s ignores $namespace", p.Title, tg.RefID, sm[0])
				}
			} else if !strings.Contains(body, `node=~"$node"`) && !strings.Contains(body, `node="$node"`) {
				t.Errorf("panel %q target %s: selector %s ignores $node", p.Title, tg.RefID, sm[0])
			}
		}
	}
}

func walkDatasources(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "datasource" {
				if ref, ok := c.(map[string]any); ok {
					fn(ref)
					continue
				}
				if s, ok := c.(string); ok {
					fn(map[string]any{"uid": s})
					continue
				}
			}
			walkDatasources(c, fn)
		}
	case []any:
		for _, c := range x {
			walkDatasources(c, fn)
		}
	}
}

// TestThresholdsMatchAlerts reads the alert rules and fails when a
// dashboard threshold and its alert disagree.
func TestThresholdsMatchAlerts(t *testing.T) {
	alerts := map[string]string{}
	for _, rf := range loadRuleFiles(t) {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					alerts[r.Alert] = r.Expr
				}
			}
		}
	}
	cases := []struct {
		alert string
		op    string
		scale float64
		want  float64
	}{
		{"GPUAllocatedIdle", "<", 1, dashboards.IdleDutyCycle},
		{"GPUSaturated", ">", 1, dashboards.SaturatedDutyCycle},
		{"GPUMemoryNearlyFull", ">", 100, dashboards.MemoryNearlyFull},
		{"GPUClusterAllocationNearlyExhausted", ">", 100, dashboards.AllocationNearlyExhausted},
		{"GPUBusyButUnderused", "<", 1, dashboards.UnderusedSMActive / 100},
		{"GPUBusyButUnderused", ">", 1, dashboards.BusyDutyCycle},
	}
	for _, c := range cases {
		expr, ok := alerts[c.alert]
		if !ok {
			t.Errorf("alert %s not found in deploy/prometheus", c.alert)
			continue
		}
		sm := regexp.MustCompile(regexp.QuoteMeta(c.op) + `\s*([0-9.]+)`).FindStringSubmatch(expr)
		if sm == nil {
			t.Errorf("alert %s: no %q comparison in %q", c.alert, c.op, expr)
			continue
		}
		v, err := strconv.ParseFloat(sm[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := v * c.scale; got != c.want {
			t.Errorf("alert %s compares with %g, dashboards use %g", c.alert, got, c.want)
		}
	}
}

// Prometheus rule files, as far as the tests read them.
type ruleFile struct {
	Path   string
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
			For    string `yaml:"for"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func ruleFilePaths(t *testing.T) []string {
	t.Helper()
	var paths []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(tooltest.RepoRoot(), "deploy", "prometheus", pat))
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		t.Fatal("no rule files in deploy/prometheus")
	}
	return paths
}

func loadRuleFiles(t *testing.T) []ruleFile {
	t.Helper()
	var out []ruleFile
	for _, p := range ruleFilePaths(t) {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rf := ruleFile{Path: p}
		if err := yaml.Unmarshal(raw, &rf); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, rf)
	}
	return out
}
