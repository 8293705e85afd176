package deploy_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// TestMain fails the run if a simulated node's temporary directory outlives
// the tests: every exporter they start must be stopped, not killed.
func TestMain(m *testing.M) {
	os.Exit(testkit.RunLeakChecked(m, tooltest.RemoveBuilt))
}

// exporterBinary is the production exporter: the one the chart deploys,
// whose flags the chart's arguments must exist in.
func exporterBinary(t *testing.T) string { return tooltest.ExporterBinary(t) }

// simBinary is kube-gpu-exporter-sim, which takes every flag of the
// production exporter: the deploy tests run the chart's arguments on its
// simulated node.
func simBinary(t *testing.T) string { return tooltest.SimBinary(t) }

// chartArgs are the exporter arguments of the DaemonSets that the chart
// (with several value sets) and the kustomize base render.
func chartArgs(t *testing.T) map[string][]string {
	t.Helper()
	renders := map[string][]string{
		"defaults":         nil,
		"all-features":     {"--values", allFeatures},
		"kube-disabled":    {"--set", "exporter.kubeEnabled=false"},
		"tls-existing":     {"--set", "webConfig.existingSecret=s", "--set", "webConfig.tls=true"},
		"gpu-resources":    {"--set", "exporter.gpuResources={nvidia.com/gpu,nvidia.com/gpu.shared}", "--set", "exporter.dutyCycleWindow=2m"},
		"kubelet-settings": {"--set", "exporter.kubeletTimeout=10s", "--set", "exporter.kubeletMaxRecvMsgSize=128MiB"},
	}
	args := map[string][]string{}
	for name, r := range renders {
		args["chart "+name] = exporterContainer(t, only[*appsv1.DaemonSet](t, helmTemplate(t, r...))).Args
	}
	kustomize := tooltest.Require(t, "kustomize")
	args["kustomize"] = exporterContainer(t, only[*appsv1.DaemonSet](t, decodeAll(t, run(t, kustomize, "build", kustomizeDir)))).Args
	return args
}

// Every flag the chart or the kustomize base passes exists in the exporter.
func TestDeployedFlagsExistInExporter(t *testing.T) {
	bin := exporterBinary(t)
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, help)
	}
	for name, args := range chartArgs(t) {
		for _, a := range args {
			if !strings.HasPrefix(a, "--") {
				t.Errorf("%s: argument %q is not a flag", name, a)
				continue
			}
			flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			var re *regexp.Regexp
			if neg, ok := strings.CutPrefix(flag, "no-"); ok {
				re = regexp.MustCompile(`--\[no-\]` + regexp.QuoteMeta(neg) + `\b`)
			} else {
				re = regexp.MustCompile(`--(\[no-\])?` + regexp.QuoteMeta(flag) + `([= ]|$)`)
			}
			if !re.Match(help) {
				t.Errorf("%s: flag --%s is not in the exporter's --help", name, flag)
			}
		}
	}
}

// The exporter starts with each rendered argument list (on the simulated
// node, on a free local port) and answers the probes' GET /.
func TestExporterRunsWithDeployedArgs(t *testing.T) {
	bin := simBinary(t)
	for name, args := range chartArgs(t) {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			var run []string
			for _, a := range args {
				switch {
				case strings.HasPrefix(a, "--web.listen-address="), strings.HasPrefix(a, "--web.config.file="):
					continue // replaced below; the web configuration is tested on its own
				case a == "--kube.node-name=$(NODE_NAME)":
					a = "--kube.node-name=sim-node" // what the kubelet expands from the downward API
				}
				run = append(run, a)
			}
			url := startExporter(t, bin, append(run, "--simulate")...)
			body := get(t, url+"/", nil, http.StatusOK)
			if !strings.Contains(body, "/metrics") {
				t.Errorf("landing page does not link the metrics:\n%s", body)
			}
			metrics := get(t, url+"/metrics", nil, http.StatusOK)
			if !strings.Contains(metrics, `node="sim-node"`) {
				t.Error("metrics lack node=\"sim-node\"")
			}
		})
	}
}

// With basic auth in the web configuration the landing page answers 401
// without credentials: that is why the chart's probes check the TCP port then.
func TestExporterBasicAuthProtectsProbePath(t *testing.T) {
	bin := simBinary(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web-config.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "basic_auth_users:\n  prometheus: %s\n", hash), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startExporter(t, bin, "--simulate", "--web.config.file="+cfg)
	get(t, url+"/", nil, http.StatusUnauthorized)
	get(t, url+"/", &[2]string{"prometheus", "s3cret"}, http.StatusOK)
}

// The alerts on the live simulated node: its idle notebook GPU raises
// GPUAllocatedIdle, and nothing is reported unallocatable, exhausted, full
// or down. The scraped values are held for four hours in a promtool unit test.
func TestSimulatedNodeAlerts(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	bin := simBinary(t)
	url := startExporter(t, bin, "--simulate", "--nvml.poll-interval=500ms", "--nvml.duty-cycle-window=2s")
	time.Sleep(3 * time.Second) // fill the duty-cycle window
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(get(t, url+"/metrics", nil, http.StatusOK)))
	if err != nil {
		t.Fatal(err)
	}

	target := map[string]string{"job": "kube-gpu-exporter", "instance": "sim-node:9871"}
	type sample struct {
		labels map[string]string
		value  float64
	}
	var input []map[string]string
	var idle []sample
	for _, name := range slices.Sorted(maps.Keys(families)) {
		if !strings.HasPrefix(name, "containerGpu") && !strings.HasPrefix(name, "nodeGpu") && name != "kube_gpu_exporter_up" {
			continue
		}
		for _, m := range families[name].GetMetric() {
			labels := maps.Clone(target)
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			v := m.GetGauge().GetValue()
			input = append(input, map[string]string{
				"series": seriesString(name, labels),
				"values": strconv.FormatFloat(v, 'f', -1, 64) + "+0x240",
			})
			if name == "containerGpuDutyCycle" && v < 5 {
				idle = append(idle, sample{labels, v})
			}
		}
	}
	input = append(input, map[string]string{"series": seriesString("up", target), "values": "1+0x240"})
	for _, want := range []string{"containerGpuDutyCycle", "nodeGpuCapacity", "nodeGpuAllocatable", "containerGpuRequests", "kube_gpu_exporter_up"} {
		if _, ok := families[want]; !ok {
			t.Errorf("the simulated node exports no %s", want)
		}
	}
	if len(idle) != 1 || idle[0].labels["namespace"] != "notebooks" || idle[0].labels["pod"] != "jupyter-alice" {
		t.Fatalf("idle containers = %+v, want only notebooks/jupyter-alice", idle)
	}

	// The expected alert, its annotations expanded as Prometheus does.
	var idleRule rule
	for _, g := range readRules(t, filepath.Join(rulesDir, "alerts.rules.yaml")).Groups {
		for _, r := range g.Rules {
			if r.Alert == "GPUAllocatedIdle" {
				idleRule = r
			}
		}
	}
	expLabels := maps.Clone(idle[0].labels)
	maps.Copy(expLabels, idleRule.Labels)
	expAnnotations := map[string]string{}
	for k, text := range idleRule.Annotations {
		expAnnotations[k] = expandAlertTemplate(t, text, idle[0].labels, idle[0].value)
	}

	tests := []map[string]any{}
	for _, a := range []string{"GPUMemoryNearlyFull", "GPUUnallocatable", "GPUClusterAllocationNearlyExhausted",
		"KubeGpuExporterDown", "KubeGpuExporterAbsent", "KubeGpuExporterNVMLDown", "KubeGpuExporterKubeletDown"} {
		tests = append(tests, map[string]any{"eval_time": "3h", "alertname": a, "exp_alerts": []any{}})
	}
	tests = append(tests, map[string]any{"eval_time": "3h", "alertname": "GPUAllocatedIdle",
		"exp_alerts": []any{map[string]any{"exp_labels": expLabels, "exp_annotations": expAnnotations}}})
	file := map[string]any{
		"rule_files":          []string{filepath.Join(rulesDir, "alerts.rules.yaml")},
		"evaluation_interval": "1m",
		"tests":               []any{map[string]any{"interval": "1m", "input_series": input, "alert_rule_test": tests}},
	}
	path := filepath.Join(t.TempDir(), "live_sim_test.yaml")
	writeYAML(t, path, file)
	if out, err := runErr(promtool, "test", "rules", path); err != nil {
		t.Fatalf("promtool on the live simulated node: %v\n%s", err, out)
	}
}

func seriesString(name string, labels map[string]string) string {
	var b strings.Builder
	b.WriteString(name + "{")
	keys := slices.Sorted(maps.Keys(labels))
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteString("}")
	return b.String()
}

// expandAlertTemplate expands an annotation like Prometheus' rule manager,
// for the functions the rules' annotations use.
func expandAlertTemplate(t *testing.T, text string, labels map[string]string, value float64) string {
	t.Helper()
	const defs = "{{$labels := .Labels}}{{$value := .Value}}"
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(template.FuncMap{
		"humanizePercentage": func(v float64) string { return fmt.Sprintf("%.4g%%", v*100) },
	}).Parse(defs + text)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, struct {
		Labels map[string]string
		Value  float64
	}{labels, value}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// startExporter runs the exporter on a free local port until the test ends
// and returns its base URL once it accepts connections. It is stopped with
// SIGTERM and waited for, so that the simulated node removes its kubelet
// socket and procfs directory.
func startExporter(t *testing.T, bin string, args ...string) string {
	t.Helper()
	// A dial says nothing: the launcher's socket accepts before the
	// exporter serves. Ready is an HTTP answer, of any status: some runs
	// require credentials.
	e := tooltest.StartExporter(t, bin, func(addr string) error {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}, args...)
	return "http://" + e.Addr
}

func get(t *testing.T, url string, auth *[2]string, wantStatus int) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != nil {
		req.SetBasicAuth(auth[0], auth[1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %s, want %d\n%s", url, resp.Status, wantStatus, body)
	}
	return string(body)
}
