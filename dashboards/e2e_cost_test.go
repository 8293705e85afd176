package dashboards_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// costRuleFile writes the cost rules the chart renders from prices into a
// rule file of their own, for the cost dashboard's cost panels. Only the
// cost rules: the chargeback group itself is loaded from deploy/prometheus,
// and a second copy would record every series twice.
func costRuleFile(t *testing.T, dir string) string {
	t.Helper()
	helm := tooltest.Require(t, "helm")
	chart := filepath.Join(tooltest.RepoRoot(), "deploy", "helm", "kube-gpu-exporter")
	out, err := exec.Command(helm, "template", "x", chart, "--show-only", "templates/prometheusrule.yaml",
		"--set", "prometheusRule.enabled=true",
		"--set-json", `chargeback.pricePerGPUHour={"default": 2}`,
		"--set-json", "chargeback.pricePerKWh=0.25").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var pr struct {
		Spec struct {
			Groups []struct {
				Name  string           `json:"name"`
				Rules []map[string]any `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(out, &pr); err != nil {
		t.Fatal(err)
	}
	var cost []map[string]any
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if rec, _ := r["record"].(string); strings.Contains(rec, "cost:") {
				cost = append(cost, r)
			}
		}
	}
	if len(cost) == 0 {
		t.Fatal("the chart rendered no cost rules")
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{
		"name": "kube-gpu-exporter.chargeback-cost", "interval": "1s", "rules": cost,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules-cost.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// What the cost dashboard must show for the simulated node: the notebook
// holds a GPU it hardly uses, the trainer uses its four.
func init() {
	expectations[expectKey{"kube-gpu-exporter-cost", "Namespaces", "D", "notebooks"}] =
		rowsWhere("namespace", "notebooks", 1, func(v float64) bool { return v < 5 }, "used share < 5 %")
	expectations[expectKey{"kube-gpu-exporter-cost", "Namespaces", "D", "ml-training"}] =
		rowsWhere("namespace", "ml-training", 1, func(v float64) bool { return v > 85 }, "used share > 85 %")
	expectations[expectKey{"kube-gpu-exporter-cost", "Idle waste ranking", "A", "notebooks"}] =
		rowsWhere("pod", "jupyter-alice", 1, func(v float64) bool { return v > 0 }, "idle GPU-hours > 0")
}
