package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// pricedValues are the prices of testdata/chargeback_cost_test.yaml; given as
// JSON because --set would turn 0.25 into a string.
var pricedValues = []string{
	"--set", "prometheusRule.enabled=true",
	"--set-json", `chargeback.pricePerGPUHour={"NVIDIA H100 80GB HBM3": 3.5, "default": 2}`,
	"--set-json", "chargeback.pricePerKWh=0.25",
}

func records(pr *prometheusRule) map[string]string {
	out := map[string]string{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out[r.Record] = r.Expr
			}
		}
	}
	return out
}

// The cost rules the chart renders from prices compute the expected costs.
func TestHelmChargebackCostRules(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	pr := only[*prometheusRule](t, helmTemplate(t, pricedValues...))
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "rules.yaml"), pr.Spec)
	src, err := os.ReadFile(filepath.Join(root, "deploy", "testdata", "chargeback_cost_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	test := filepath.Join(dir, "cost_test.yaml")
	if err := os.WriteFile(test, src, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, promtool, "check", "rules", filepath.Join(dir, "rules.yaml"))
	t.Logf("%s", run(t, promtool, "test", "rules", test))
}

// Without prices no cost rule is rendered, the chargeback rules are on by
// default, the OpenCost bridge off; each can be switched.
func TestHelmChargebackSwitches(t *testing.T) {
	recs := records(only[*prometheusRule](t, helmTemplate(t, "--set", "prometheusRule.enabled=true")))
	if _, ok := recs["namespace:kube_gpu_allocated_gpu_hours:increase1h"]; !ok {
		t.Error("chargeback rules not rendered by default")
	}
	for r := range recs {
		if strings.Contains(r, "_cost:") || strings.HasPrefix(r, "DCGM_") {
			t.Errorf("%s rendered without prices or openCost", r)
		}
	}

	recs = records(only[*prometheusRule](t, helmTemplate(t, "--set", "prometheusRule.enabled=true",
		"--set", "chargeback.rules=false", "--set", "chargeback.openCost=true")))
	for r := range recs {
		if strings.Contains(r, "kube_gpu_allocated_gpu_hours") {
			t.Errorf("%s rendered with chargeback.rules=false", r)
		}
	}
	for _, want := range []string{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL"} {
		if _, ok := recs[want]; !ok {
			t.Errorf("%s not rendered with chargeback.openCost=true", want)
		}
	}

	// A price for the energy only: energy cost and the total, no GPU-hour cost.
	recs = records(only[*prometheusRule](t, helmTemplate(t, "--set", "prometheusRule.enabled=true", "--set-json", "chargeback.pricePerKWh=0.3")))
	for r, want := range map[string]bool{
		"namespace_pod:kube_gpu_energy_cost:increase1h":              true,
		"namespace:kube_gpu_cost:increase1h":                         true,
		"namespace_pod:kube_gpu_allocated_gpu_hours_cost:increase1h": false,
	} {
		if _, ok := recs[r]; ok != want {
			t.Errorf("pricePerKWh only: %s rendered = %v", r, ok)
		}
	}
	if e := recs["namespace_pod:kube_gpu_energy_cost:increase1h"]; !strings.HasSuffix(e, "* 0.3") {
		t.Errorf("energy cost = %q", e)
	}
}

// Prices are numbers, not negative.
func TestHelmChargebackSchema(t *testing.T) {
	helm := tooltest.Require(t, "helm")
	for _, args := range [][]string{
		{"--set-json", "chargeback.pricePerKWh=-1"},
		{"--set", "chargeback.pricePerKWh=cheap"},
		{"--set-json", `chargeback.pricePerGPUHour={"default": "2"}`},
		{"--set-json", `chargeback.pricePerGPUHour={"A100": -2}`},
		{"--set", "chargeback.opencost=true"},
	} {
		_, err := runErr(helm, append([]string{"template", "x", chartDir}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%v: err = %v, want a schema error", args, err)
		}
	}
}
