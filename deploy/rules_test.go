package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(rulesDir, "*.rules.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("rule files in %s: %v %v", rulesDir, files, err)
	}
	return files
}

func readRules(t *testing.T, path string) ruleFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	js, err := yaml.YAMLToJSONStrict(b)
	if err == nil {
		err = unmarshalStrict(js, &rf)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rf
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	out := run(t, promtool, append([]string{"check", "rules"}, ruleFiles(t)...)...)
	t.Logf("%s", out)
}

func TestPromtoolRuleUnitTests(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	tests, _ := filepath.Glob(filepath.Join(rulesDir, "tests", "*.yaml"))
	if len(tests) == 0 {
		t.Fatal("no rule unit tests")
	}
	out := run(t, promtool, append([]string{"test", "rules"}, tests...)...)
	t.Logf("%s", out)
}

// ruleTest is the part of a promtool unit-test file this test reads.
type ruleTestFile struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert has a severity, a summary, a description, a runbook in
// docs/alerts.md, and unit tests where it fires and where it must not.
func TestAlertsAreDocumentedAndTested(t *testing.T) {
	alerts := map[string]rule{}
	for _, f := range ruleFiles(t) {
		for _, g := range readRules(t, f).Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					alerts[r.Alert] = r
				}
			}
		}
	}
	for _, want := range []string{"GPUAllocatedIdle", "GPUSaturated", "GPUMemoryNearlyFull", "GPUUnallocatable",
		"GPUClusterAllocationNearlyExhausted", "KubeGpuExporterDown", "KubeGpuExporterNVMLDown", "KubeGpuExporterKubeletDown",
		"GPUCriticalXid", "GPUFailed", "GPUUncorrectableECCErrors", "GPURowRemapFailure", "GPURowRemapPending", "GPUThrottled",
		"GPUBusyButUnderused", "GPUWorkloadStraggler", "GPUDeviceUnhealthy"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("alert %s missing", want)
		}
	}

	doc, err := os.ReadFile(filepath.Join(root, "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{2,3} +(.+?)\s*$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}

	fires, silent := map[string]bool{}, map[string]bool{}
	tests, _ := filepath.Glob(filepath.Join(rulesDir, "tests", "*.yaml"))
	for _, f := range tests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tf ruleTestFile
		if err := yaml.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
		}
	}

	names := make([]string, 0, len(alerts))
	for n := range alerts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		r := alerts[name]
		switch r.Labels["severity"] {
		case "info", "warning", "critical":
		default:
			t.Errorf("%s: severity %q", name, r.Labels["severity"])
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", name, a)
			}
		}
		const prefix = "https://github.com/kube-gpu-exporter/kube-gpu-exporter/blob/main/docs/alerts.md#"
		url := r.Annotations["runbook_url"]
		if !strings.HasPrefix(url, prefix) {
			t.Errorf("%s: runbook_url %q does not point into docs/alerts.md", name, url)
		} else if anchor := strings.TrimPrefix(url, prefix); !anchors[anchor] {
			t.Errorf("%s: docs/alerts.md has no heading for anchor #%s", name, anchor)
		}
		if !fires[name] {
			t.Errorf("%s: no unit test where it fires", name)
		}
		if !silent[name] {
			t.Errorf("%s: no unit test where it must stay silent", name)
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	h = regexp.MustCompile("[^a-z0-9 _-]").ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}
