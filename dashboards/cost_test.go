package dashboards_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/dashboards"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// The cost panels turn the hourly chargeback series into totals by dividing
// their sum by RulesPerHour: that holds only while the rule group runs that
// many times an hour.
func TestCostMatchesRuleInterval(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(tooltest.RepoRoot(), "deploy", "prometheus", "chargeback.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Name     string `json:"name"`
			Interval string `json:"interval"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	if len(rf.Groups) != 1 {
		t.Fatalf("groups = %+v, want one", rf.Groups)
	}
	iv, err := time.ParseDuration(rf.Groups[0].Interval)
	if err != nil {
		t.Fatal(err)
	}
	if n := int(time.Hour / iv); n != dashboards.RulesPerHour {
		t.Errorf("chargeback rules run %d times an hour (interval %s), the cost dashboard assumes %d", n, iv, dashboards.RulesPerHour)
	}
}

// Every panel of the cost dashboard reads the chargeback series, and the
// trend panels step one day at a time over 30 days.
func TestCostPanels(t *testing.T) {
	d := dashboards.Cost()
	trends := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, ":increase1h") {
				t.Errorf("panel %q target %s reads no chargeback series: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
		if p.TimeFrom != "" {
			trends++
			if p.TimeFrom != "30d" || p.Interval != "1d" {
				t.Errorf("panel %q: timeFrom %q interval %q", p.Title, p.TimeFrom, p.Interval)
			}
			for _, tg := range p.Targets {
				if !strings.Contains(tg.Expr, "[1d]") {
					t.Errorf("trend panel %q sums no day: %s", p.Title, tg.Expr)
				}
			}
		}
	}
	if trends != 3 {
		t.Errorf("%d trend panels, want 3", trends)
	}
}
