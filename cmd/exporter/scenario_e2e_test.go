package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// scenarioGolden runs the built binary on an example scenario, waits for
// the simulated Kubernetes API to sync and for ready to be served (a
// series that needs a second poll, such as a GPM duty cycle), and compares
// the normalised exposition with testdata/<golden>.
func scenarioGolden(t *testing.T, scenario, golden, ready string, args ...string) string {
	t.Helper()
	path := filepath.Join(tooltest.RepoRoot(), "examples", scenario)
	e := startExporter(t, append([]string{"--simulate.scenario=" + path, "--nvml.poll-interval=500ms", "--nvml.duty-cycle-window=10s"}, args...)...)
	raw := scrape(t, e.Addr)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(raw, `kube_gpu_exporter_up{source="kubernetes"} 1`) || !strings.Contains(raw, ready); raw = scrape(t, e.Addr) {
		if time.Now().After(deadline) {
			t.Fatalf("simulated node never served Kubernetes data and duty cycles:\n%s\n%s", raw, e.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := normalize(raw)
	file := filepath.Join("testdata", golden)
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (run go test ./cmd/exporter -run Scenario -update to accept):\n%s", file, lineDiff(string(want), got))
	}
	checkDocumented(t, raw)
	promtoolCheck(t, raw)
	return raw
}

func TestScenarioMIGNode(t *testing.T) {
	raw := scenarioGolden(t, "mig-node.yaml", "e2e-mig-node.txt", `nodeGpuDutyCycle{gpu_id="MIG-`)
	// Every MIG instance has its own GPM duty cycle; the MIG-enabled GPU has none.
	for j := 0; j < 6; j++ {
		id := fmt.Sprintf("MIG-00000000-0000-4000-9000-%012d", j)
		if !regexp.MustCompile(`nodeGpuDutyCycle\{gpu_id="` + id + `"`).MatchString(raw) {
			t.Errorf("instance %s has no duty cycle", id)
		}
	}
	if strings.Contains(raw, `nodeGpuDutyCycle{gpu_id="GPU-00000000-0000-4000-8000-000000000000"`) {
		t.Error("the MIG-enabled GPU has a duty cycle")
	}
	// The time-sliced instance: NVML gives its processes' memory, not
	// their utilization, so each notebook has its own memory.
	shared := `gpu_id="MIG-00000000-0000-4000-9000-000000000005",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia"`
	for _, want := range []string{
		`kube_gpu_attribution_info{` + shared + `,mode="per_process_memory",node="mig-node",reason="not_supported"} 1`,
		`containerGpumemoryUsedBytes{container="notebook",` + shared + `,namespace="notebooks",node="mig-node",pod="dave"} 2.147483648e+09`,
		`containerGpumemoryUsedBytes{container="notebook",` + shared + `,namespace="notebooks",node="mig-node",pod="erin"} 4.294967296e+09`,
	} {
		if !strings.Contains(raw, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}

func TestScenarioDRANode(t *testing.T) {
	raw := scenarioGolden(t, "dra-node.yaml", "e2e-dra-node.txt", `containerGpuDutyCycle{container="trainer"`)
	for _, want := range []string{
		// Capacity of the DRA driver: the devices its ResourceSlice publishes.
		`nodeGpuCapacity{gpu_vendor="nvidia",node="dra-node",resource="gpu.nvidia.com"} 6`,
		`nodeGpuAllocatable{gpu_vendor="nvidia",node="dra-node",resource="gpu.nvidia.com"} 6`,
		`nodeGpuCapacity{gpu_vendor="nvidia",node="dra-node",resource="nvidia.com/gpu"} 2`,
		// Requests: the devices each container's claims were allocated.
		`containerGpuRequests{container="trainer",gpu_vendor="nvidia",namespace="ml-training",node="dra-node",pod="llm-finetune-0",resource="gpu.nvidia.com"} 4`,
		`containerGpuLimits{container="warmup",gpu_vendor="nvidia",namespace="inference",node="dra-node",pod="ranker-0",resource="gpu.nvidia.com"} 1`,
		// A claim shared by two containers is split per process.
		`kube_gpu_attribution_info{gpu_id="GPU-00000000-0000-4000-8000-000000000004",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",mode="per_process",node="dra-node",reason=""} 1`,
		`kube_gpu_exporter_unmatched_devices 0`,
	} {
		if !strings.Contains(raw, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	if n := strings.Count(raw, "\ncontainerGpuDutyCycle{"); n != 7 {
		t.Errorf("%d container duty-cycle series, want 7 (4 trainer GPUs, 2 ranker containers, 1 notebook)", n)
	}
}
