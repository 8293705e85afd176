package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

var update = flag.Bool("update", false, "rewrite testdata/e2e-output.txt from the current output")

// startExporter runs the real binary and waits until it serves /metrics.
func startExporter(t *testing.T, args ...string) *tooltest.Exporter {
	t.Helper()
	return tooltest.StartExporter(t, binaryFor(t, args), plainReady, args...)
}

// binaryFor returns the binary that takes args: kube-gpu-exporter-sim when
// they ask for a simulated node (only it has --simulate flags), else the
// production exporter.
func binaryFor(t *testing.T, args []string) string {
	t.Helper()
	for _, a := range args {
		if a == "--simulate" || strings.HasPrefix(a, "--simulate.") || strings.HasPrefix(a, "--simulate=") || a == "--no-simulate" {
			return tooltest.SimBinary(t)
		}
	}
	return tooltest.ExporterBinary(t)
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// volatile are the families whose values move with time, the machine or
// the readiness polls that came before (a previous scrape's handler may
// not have returned yet, so requests in flight is 1 or 2).
var volatile = regexp.MustCompile(`^(containerGpuDutyCycle|nodeGpuDutyCycle|kube_gpu_unattributed_duty_cycle|kube_gpu_memory_bandwidth_utilization_ratio|kube_gpu_energy_joules_total|kube_gpu_power_usage_watts|kube_gpu_temperature_celsius|kube_gpu_clock_event_seconds_total|kube_gpu_exporter_scrape_duration_seconds|promhttp_metric_handler_requests_total|promhttp_metric_handler_requests_in_flight|kube_gpu_(container_)?[a-z0-9_]+_(active|occupancy)_ratio|kube_gpu_[a-z]+_bandwidth_bytes_per_second|kube_gpu_container_(energy_joules|allocated_gpu_seconds|used_gpu_seconds)_total|kube_gpu_un(allocated|attributed)_energy_joules_total)[{ ]`)

// normalize drops the Go runtime families and blanks values that move, so
// the rest of the exposition can be compared byte for byte.
func normalize(text string) string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		name := metricName(line)
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if strings.HasPrefix(name, "kube_gpu_exporter_build_info") && !strings.HasPrefix(line, "#") {
			line = "kube_gpu_exporter_build_info{...} 1"
		}
		if volatile.MatchString(line) {
			line = line[:strings.LastIndexByte(line, ' ')] + " <value>"
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

// metricName returns the family a line belongs to.
func metricName(line string) string {
	if strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE ") {
		return strings.Fields(line)[2]
	}
	if i := strings.IndexAny(line, "{ "); i > 0 {
		return line[:i]
	}
	return line
}

func TestEndToEndSimulatedNode(t *testing.T) {
	e := startExporter(t, "--simulate")
	raw := scrape(t, e.Addr)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(raw, `kube_gpu_exporter_up{source="kubernetes"} 1`); raw = scrape(t, e.Addr) {
		if time.Now().After(deadline) {
			t.Fatalf("simulated Kubernetes API never synced:\n%s", e.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := normalize(raw)

	golden := filepath.Join("testdata", "e2e-output.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (run go test ./cmd/exporter -run EndToEnd -update to accept):\n%s", golden, lineDiff(string(want), got))
	}

	// Both time-sliced pods map to the same physical GPU.
	shared := regexp.MustCompile(`containerGpumemoryUsedBytes\{container="worker",gpu_id="([^"]+)".*pod="shared-(a|b)"\}`)
	ids := map[string]bool{}
	for _, m := range shared.FindAllStringSubmatch(raw, -1) {
		ids[m[1]] = true
	}
	if len(ids) != 1 {
		t.Errorf("time-sliced pods map to %d GPUs, want 1: %v", len(ids), ids)
	}
	// The time-sliced pods get their own numbers, adding up to the device's.
	val := func(re string) float64 {
		m := regexp.MustCompile(re + ` ([0-9.e+]+)`).FindStringSubmatch(raw)
		if m == nil {
			t.Fatalf("no series matches %s", re)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	const gpu6 = "GPU-00000000-0000-4000-8000-000000000006"
	dutyA := val(`containerGpuDutyCycle\{[^}]*pod="shared-a"\}`)
	dutyB := val(`containerGpuDutyCycle\{[^}]*pod="shared-b"\}`)
	dutyDev := val(`nodeGpuDutyCycle\{gpu_id="` + gpu6 + `"[^}]*\}`)
	if dutyA == dutyB || math.Abs(dutyA+dutyB-dutyDev) > 3 {
		t.Errorf("shared GPU: shared-a %.1f + shared-b %.1f vs device %.1f; want different values adding up", dutyA, dutyB, dutyDev)
	}
	memA := val(`containerGpumemoryUsedBytes\{[^}]*pod="shared-a"\}`)
	memB := val(`containerGpumemoryUsedBytes\{[^}]*pod="shared-b"\}`)
	if memDev := val(`nodeGpumemoryUsedBytes\{gpu_id="` + gpu6 + `"[^}]*\}`); memA+memB != memDev || memA == memB {
		t.Errorf("shared GPU memory: %v + %v vs device %v", memA, memB, memDev)
	}
	// The pod using a GPU it did not request is reported.
	if !regexp.MustCompile(`kube_gpu_unattributed_memory_used_bytes\{[^}]*namespace="research",node="sim-node",pod="analysis-0"\} 3\.221225472e\+09`).MatchString(raw) {
		t.Errorf("unattributed use of research/analysis-0 not reported")
	}
	// The unallocated GPU is visible at node level only.
	const idle = "GPU-00000000-0000-4000-8000-000000000007"
	if !strings.Contains(raw, `nodeGpuDutyCycle{gpu_id="`+idle) || strings.Contains(raw, `containerGpuDutyCycle{container="`) && regexp.MustCompile(`container[A-Za-z]+\{[^}]*`+idle).MatchString(raw) {
		t.Errorf("GPU 7 must be visible in node metrics and absent from container metrics")
	}
	for _, name := range []string{"containerGpuDutyCycle", "containerGpuRequests", "containerGpuLimits", "containerGpumemoryTotalBytes", "containerGpumemoryUsedBytes", "nodeGpuCapacity", "nodeGpuAllocatable"} {
		if !strings.Contains(raw, "\n"+name+"{") {
			t.Errorf("Container Insights metric %s missing", name)
		}
	}
	checkDocumented(t, raw)
	promtoolCheck(t, raw)
}

// checkDocumented fails for any exposed family that docs/metrics.md does not name.
func checkDocumented(t *testing.T, raw string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(tooltest.RepoRoot(), "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(raw, "\n") {
		name := metricName(line)
		if name == "" || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || seen[name] {
			continue
		}
		seen[name] = true
		if !bytes.Contains(doc, []byte("`"+name+"`")) {
			t.Errorf("metric %s is exposed but not documented in docs/metrics.md", name)
		}
	}
}

// contractNames are camelCase by contract with Container Insights.
var contractNames = map[string]bool{
	"containerGpuDutyCycle": true, "containerGpuRequests": true, "containerGpuLimits": true,
	"containerGpumemoryTotalBytes": true, "containerGpumemoryUsedBytes": true, "nodeGpuCapacity": true,
	"nodeGpuAllocatable": true, "nodeGpuDutyCycle": true, "nodeGpumemoryTotalBytes": true, "nodeGpumemoryUsedBytes": true,
}

func promtoolCheck(t *testing.T, raw string) {
	t.Helper()
	promtool := tooltest.Require(t, "promtool")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(raw)
	out, _ := cmd.CombinedOutput() // exit 1 on any finding; the findings are judged below
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		if contractNames[name] && strings.Contains(line, "camelCase") {
			continue
		}
		t.Errorf("promtool check metrics: %s", line)
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	ws, gs := map[string]bool{}, map[string]bool{}
	for _, l := range w {
		ws[l] = true
	}
	for _, l := range g {
		gs[l] = true
	}
	var d []string
	for _, l := range w {
		if !gs[l] {
			d = append(d, "- "+l)
		}
	}
	for _, l := range g {
		if !ws[l] {
			d = append(d, "+ "+l)
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

func TestNoGPUNoKubelet(t *testing.T) {
	e := startExporter(t, "--kubelet.pod-resources-socket="+filepath.Join(t.TempDir(), "absent.sock"), "--kube.node-name=plain-node")
	raw := scrape(t, e.Addr)
	for _, want := range []string{`kube_gpu_exporter_up{source="nvml"} 0`, `kube_gpu_exporter_up{source="kubelet"} 0`} {
		if !strings.Contains(raw, want) {
			t.Errorf("missing %s in:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, "nodeGpu") || strings.Contains(raw, "containerGpu") {
		t.Errorf("GPU series served without NVML or kubelet")
	}
	scrape(t, e.Addr) // a second scrape must not log the same conditions again
	log := e.Log()
	if n := strings.Count(log, "NVML unavailable"); n != 1 {
		t.Errorf("NVML failure logged %d times, want once:\n%s", n, log)
	}
	if n := strings.Count(log, "kubelet pod-resources unavailable"); n != 1 {
		t.Errorf("kubelet failure logged %d times, want once:\n%s", n, log)
	}
}

func TestBadFlagsAndScenarios(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("gpus: 2\npods:\n  - namespace: a\n    name: b\n    containres: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	semantic := filepath.Join(t.TempDir(), "semantic.yaml")
	if err := os.WriteFile(semantic, []byte("gpus: 1\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"3\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--nvml.duty-cycle-window=forever"}, "--nvml.duty-cycle-window"},
		{[]string{"--nvml.poll-interval=30s"}, "--nvml.poll-interval"},
		{[]string{"--kubelet.timeout=0s"}, "--kubelet.timeout"},
		{[]string{"--kubelet.max-recv-msg-size=1KiB"}, "--kubelet.max-recv-msg-size"},
		{[]string{"--gpu.resource=gpu"}, "--gpu.resource"},
		{[]string{"--web.telemetry-path=metrics"}, "--web.telemetry-path"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"--simulate.scenario=" + bad}, "line 5"},
		{[]string{"--simulate.scenario=" + semantic}, "pods[0].containers[0].devices[0]"},
		{[]string{"--simulate.scenario=/nonexistent.yaml"}, "/nonexistent.yaml"},
		{[]string{"--no-simulate"}, "--simulate.scenario"},
	}
	for _, tt := range tests {
		checkRefused(t, binaryFor(t, tt.args), tt.args, tt.want)
	}
	// The production binary carries no simulator, nor its flags.
	for _, a := range []string{"--simulate", "--simulate.scenario=" + semantic} {
		checkRefused(t, tooltest.ExporterBinary(t), []string{a}, "unknown long flag '--simulate")
	}
}

// checkRefused runs bin with args and wants it to exit non-zero, naming want.
func checkRefused(t *testing.T, bin string, args []string, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, "--web.listen-address="+tooltest.FreeAddr(t))...).CombinedOutput()
	if err == nil {
		t.Errorf("%s %v: exited 0, want an error", filepath.Base(bin), args)
		return
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("%s %v: output does not name %q:\n%s", filepath.Base(bin), args, want, out)
	}
}

// TestSimulatedNodeWithoutKubernetesAPI runs the fallback: requests, limits,
// capacity and allocatable from the kubelet and NVML, up{kubernetes} 0 and
// one log line saying so; shared GPUs then stay device-wide.
func TestSimulatedNodeWithoutKubernetesAPI(t *testing.T) {
	e := startExporter(t, "--simulate", "--no-kube.enabled")
	raw := scrape(t, e.Addr)
	for _, want := range []string{
		`kube_gpu_exporter_up{source="kubernetes"} 0`,
		`containerGpuRequests{container="trainer",gpu_vendor="nvidia",namespace="ml-training",node="sim-node",pod="trainer-0",resource="nvidia.com/gpu"} 4`,
		`nodeGpuCapacity{gpu_vendor="nvidia",node="sim-node",resource="nvidia.com/gpu"} 7`,
		`kube_gpu_attribution_info{gpu_id="GPU-00000000-0000-4000-8000-000000000006",gpu_model="Mock NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",mode="device",node="sim-node",reason="no_kubernetes_api"} 1`,
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("missing %s", want)
		}
	}
	if n := strings.Count(e.Log(), "Kubernetes API disabled"); n != 1 {
		t.Errorf("fallback logged %d times, want once:\n%s", n, e.Log())
	}
}
