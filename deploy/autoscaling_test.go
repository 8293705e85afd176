package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// adapterConfig is the part of prometheus-adapter's config.yaml the rules
// use; unmarshalled strictly, a misspelt field fails.
type adapterConfig struct {
	Rules []struct {
		SeriesQuery string `json:"seriesQuery"`
		Resources   struct {
			Overrides map[string]struct {
				Resource string `json:"resource"`
			} `json:"overrides"`
		} `json:"resources"`
		Name struct {
			Matches string `json:"matches"`
			As      string `json:"as"`
		} `json:"name"`
		MetricsQuery string `json:"metricsQuery"`
	} `json:"rules"`
}

// scaledObject is the part of a KEDA ScaledObject the example uses.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount int `json:"minReplicaCount"`
		MaxReplicaCount int `json:"maxReplicaCount"`
		PollingInterval int `json:"pollingInterval"`
		CooldownPeriod  int `json:"cooldownPeriod"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

func readStrict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAutoscalingQueries renders every prometheus-adapter rule as the
// adapter does for the pods of one Deployment, takes the KEDA example's
// query as it is, and evaluates them with promtool against the exporter's
// series (exclusive, time-sliced and device-shared GPUs, two exporters on
// one node): each pod's number is its own.
func TestAutoscalingQueries(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	var cfg adapterConfig
	readStrict(t, filepath.Join(root, "deploy", "prometheus-adapter", "rules.yaml"), &cfg)
	if len(cfg.Rules) == 0 {
		t.Fatal("no prometheus-adapter rules")
	}
	metricName := regexp.MustCompile(`^'?([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	type recorded struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []recorded
	served := map[string]bool{}
	for _, r := range cfg.Rules {
		m := metricName.FindStringSubmatch(r.SeriesQuery)
		if m == nil {
			t.Fatalf("seriesQuery %q names no metric", r.SeriesQuery)
		}
		series := m[1]
		if ok, err := regexp.MatchString(r.Name.Matches, series); err != nil || !ok || r.Name.As == "" {
			t.Errorf("rule for %s: name %+v does not rename it", series, r.Name)
		}
		if r.Resources.Overrides["namespace"].Resource != "namespace" || r.Resources.Overrides["pod"].Resource != "pod" {
			t.Errorf("rule for %s: resources %+v, want namespace and pod", series, r.Resources)
		}
		tmpl, err := template.New(series).Delims("<<", ">>").Parse(r.MetricsQuery)
		if err != nil {
			t.Fatalf("rule for %s: %v", series, err)
		}
		var q strings.Builder
		err = tmpl.Execute(&q, map[string]string{
			"Series": series, "GroupBy": "pod",
			"LabelMatchers": `namespace="inference",pod=~"llm-server-a|llm-server-b|llm-server-c"`,
		})
		if err != nil {
			t.Fatalf("rule for %s: %v", series, err)
		}
		served[r.Name.As] = true
		rules = append(rules, recorded{"adapter_" + r.Name.As, q.String()})
	}

	var so scaledObject
	readStrict(t, filepath.Join(root, "examples", "autoscaling", "keda-scaledobject.yaml"), &so)
	if so.Kind != "ScaledObject" || len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" || so.Spec.Triggers[0].Metadata["threshold"] == "" {
		t.Fatalf("KEDA example: %+v", so)
	}
	rules = append(rules, recorded{"keda_" + strings.ReplaceAll(so.Metadata.Name, "-", "_"), so.Spec.Triggers[0].Metadata["query"]})

	// The HPA example asks for a metric the rules serve.
	var hpa autoscalingv2.HorizontalPodAutoscaler
	readStrict(t, filepath.Join(root, "examples", "autoscaling", "hpa.yaml"), &hpa)
	for _, m := range hpa.Spec.Metrics {
		if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil || !served[m.Pods.Metric.Name] {
			t.Errorf("HPA example metric %+v: not one the adapter rules serve (%v)", m, served)
		}
	}

	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "autoscaling.rules.yaml"),
		map[string]any{"groups": []any{map[string]any{"name": "autoscaling", "rules": rules}}})
	test, err := os.ReadFile(filepath.Join(root, "deploy", "testdata", "autoscaling_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "autoscaling_test.yaml"), test, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", run(t, promtool, "test", "rules", filepath.Join(dir, "autoscaling_test.yaml")))
}
