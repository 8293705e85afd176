package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

var scaleDir = filepath.Join(root, "deploy", "scale")

// The sharded Prometheus and the agent configs of docs/scale.md are valid
// for promtool, their rule files included.
func TestScaleConfigsPromtool(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	for file, agent := range map[string]bool{"shard.prometheus.yaml": false, "agent.prometheus.yaml": true} {
		t.Run(file, func(t *testing.T) {
			args := []string{"check", "config"}
			if agent {
				args = append(args, "--agent")
			}
			path := filepath.Join(scaleDir, file)
			out, err := runErr(promtool, append(args, path)...)
			if err != nil && strings.Contains(err.Error(), "field kubernetes_sd_configs not found") {
				// Debian's prometheus package is built without Kubernetes
				// service discovery: check everything else, with the same
				// pod meta labels coming from a file.
				t.Log("promtool has no kubernetes_sd_configs; checking with file_sd_configs in its place")
				out, err = runErr(promtool, append(args, withFileSD(t, path))...)
			}
			if err != nil {
				t.Fatalf("promtool check config %s: %v\n%s", file, err, out)
			}
		})
	}
}

// withFileSD writes a copy of the config at path whose kubernetes_sd_configs
// are file_sd_configs of one target with the pod labels Kubernetes discovery
// gives, next to a link to deploy/prometheus (the rule files' ../prometheus),
// and returns its path.
func withFileSD(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(rulesDir, filepath.Join(dir, "prometheus")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "scale"), 0o755); err != nil {
		t.Fatal(err)
	}
	targets := filepath.Join(dir, "scale", "targets.json")
	js, _ := json.Marshal([]map[string]any{{
		"targets": []string{"10.0.0.7:9871"},
		"labels":  map[string]string{"__meta_kubernetes_pod_node_name": "gpu-node-0007", "__meta_kubernetes_pod_container_port_name": "metrics"},
	}})
	if err := os.WriteFile(targets, js, 0o644); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sc := range cfg["scrape_configs"].([]any) {
		m := sc.(map[string]any)
		if _, ok := m["kubernetes_sd_configs"]; ok {
			delete(m, "kubernetes_sd_configs")
			m["file_sd_configs"] = []any{map[string]any{"files": []string{targets}}}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s: no kubernetes_sd_configs to replace", path)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "scale", filepath.Base(path))
	if err := os.WriteFile(copyPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return copyPath
}

// A shard keeps the nodes of its hash of the node name, and remote-writes
// the result of every recording rule it evaluates and no raw series of the
// exporter.
func TestShardRemoteWriteKeepsRollups(t *testing.T) {
	var cfg struct {
		RuleFiles []string `json:"rule_files"`
		Global    struct {
			ExternalLabels map[string]string `json:"external_labels"`
		} `json:"global"`
		ScrapeConfigs []struct {
			RelabelConfigs []struct {
				SourceLabels []string `json:"source_labels"`
				Action       string   `json:"action"`
				Modulus      int      `json:"modulus"`
				Regex        string   `json:"regex"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
		RemoteWrite []struct {
			WriteRelabelConfigs []struct {
				Regex  string `json:"regex"`
				Action string `json:"action"`
			} `json:"write_relabel_configs"`
		} `json:"remote_write"`
	}
	raw, err := os.ReadFile(filepath.Join(scaleDir, "shard.prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Global.ExternalLabels["shard"] == "" || cfg.Global.ExternalLabels["cluster"] == "" {
		t.Errorf("external labels %v: want cluster and shard, so that the store keeps the shards' parts apart", cfg.Global.ExternalLabels)
	}
	if len(cfg.ScrapeConfigs) != 1 {
		t.Fatalf("%d scrape configs, want 1", len(cfg.ScrapeConfigs))
	}
	hashed := false
	for _, r := range cfg.ScrapeConfigs[0].RelabelConfigs {
		if r.Action == "hashmod" {
			hashed = r.Modulus > 1 && len(r.SourceLabels) == 1 && r.SourceLabels[0] == "__meta_kubernetes_pod_node_name"
		}
	}
	if !hashed {
		t.Error("the shard's targets are not chosen by a hashmod of the node name")
	}
	if len(cfg.RemoteWrite) != 1 || len(cfg.RemoteWrite[0].WriteRelabelConfigs) != 1 || cfg.RemoteWrite[0].WriteRelabelConfigs[0].Action != "keep" {
		t.Fatalf("remote_write: want one keep rule on __name__")
	}
	keep := regexp.MustCompile("^(?:" + cfg.RemoteWrite[0].WriteRelabelConfigs[0].Regex + ")$")
	records := 0
	if len(cfg.RuleFiles) < 2 {
		t.Fatalf("rule_files %v: want the recording and chargeback rules", cfg.RuleFiles)
	}
	for _, f := range cfg.RuleFiles {
		f = filepath.Join(scaleDir, f)
		for _, g := range readRules(t, f).Groups {
			for _, r := range g.Rules {
				if r.Record == "" {
					continue
				}
				records++
				if !keep.MatchString(r.Record) {
					t.Errorf("recording rule %s (%s) is not remote-written", r.Record, filepath.Base(f))
				}
			}
		}
	}
	if records < 10 {
		t.Fatalf("%d recording rules found", records)
	}
	for _, raw := range []string{"containerGpuDutyCycle", "nodeGpuDutyCycle", "kube_gpu_container_energy_joules_total", "kube_gpu_family_supported", "kube_gpu_exporter_up"} {
		if keep.MatchString(raw) {
			t.Errorf("raw series %s is remote-written by the shards", raw)
		}
	}
}
