package dashboards_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// The tests read the committed JSON files, not the Go definitions: what is
// checked is what users import.

type jsonDashboard struct {
	UID           string       `json:"uid"`
	Title         string       `json:"title"`
	SchemaVersion int          `json:"schemaVersion"`
	Panels        []*jsonPanel `json:"panels"`
	Templating    struct {
		List []jsonVariable `json:"list"`
	} `json:"templating"`
}

type jsonRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type jsonVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *jsonRef        `json:"datasource"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Multi      bool            `json:"multi"`
}

type jsonPanel struct {
	ID          int          `json:"id"`
	Type        string       `json:"type"`
	Title       string       `json:"title"`
	Datasource  *jsonRef     `json:"datasource"`
	Panels      []*jsonPanel `json:"panels"`
	Targets     []jsonTarget `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds *struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Transformations []struct {
		ID      string `json:"id"`
		Options struct {
			RenameByName map[string]string `json:"renameByName"`
		} `json:"options"`
	} `json:"transformations"`
}

type jsonTarget struct {
	RefID      string   `json:"refId"`
	Expr       string   `json:"expr"`
	Datasource *jsonRef `json:"datasource"`
	Instant    bool     `json:"instant"`
	Range      bool     `json:"range"`
	Format     string   `json:"format"`
}

func dashboardsDir() string { return filepath.Join(tooltest.RepoRoot(), "dashboards") }

// dashboardFiles lists the dashboard JSON files of the repository.
func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardsDir(), "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no dashboard JSON files in dashboards/")
	}
	sort.Strings(files)
	return files
}

func loadDashboard(t *testing.T, path string) (*jsonDashboard, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d jsonDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	return &d, generic
}

// allPanels flattens rows: panels of collapsed rows live in row.panels.
func allPanels(ps []*jsonPanel) []*jsonPanel {
	var out []*jsonPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// variable returns the template variable with the given name, or nil.
func (d *jsonDashboard) variable(name string) *jsonVariable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// columnUnit returns the unit Grafana shows for a target's values: the
// panel's default, or for tables the override of the renamed value column.
func (p *jsonPanel) columnUnit(tg jsonTarget) string {
	if p.Type != "table" {
		return p.FieldConfig.Defaults.Unit
	}
	names := []string{"Value #" + tg.RefID}
	if len(p.Targets) == 1 {
		names = append(names, "Value")
	}
	for _, tr := range p.Transformations {
		for _, n := range names {
			if r, ok := tr.Options.RenameByName[n]; ok {
				names = append(names, r)
			}
		}
	}
	for _, o := range p.FieldConfig.Overrides {
		for _, n := range names {
			if o.Matcher.ID == "byName" && o.Matcher.Options == n {
				for _, prop := range o.Properties {
					if prop.ID == "unit" {
						var u string
						_ = json.Unmarshal(prop.Value, &u)
						return u
					}
				}
			}
		}
	}
	return p.FieldConfig.Defaults.Unit
}

var varRef = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// substitute replaces Grafana variables in a query by vals, failing on any
// variable it has no value for: an unknown variable is a dashboard bug.
func substitute(expr string, vals map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(expr, func(s string) string {
		sm := varRef.FindStringSubmatch(s)
		name := sm[1]
		if name == "" {
			name = sm[2]
		}
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			return s
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for variable(s) %s", strings.Join(missing, ", "))
	}
	return out, nil
}

var labelValuesRe = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

// parseLabelValues splits a Grafana label_values(selector, label) query.
func parseLabelValues(def string) (selector, label string, ok bool) {
	sm := labelValuesRe.FindStringSubmatch(strings.TrimSpace(def))
	if sm == nil {
		return "", "", false
	}
	return strings.TrimSpace(sm[1]), sm[2], true
}
