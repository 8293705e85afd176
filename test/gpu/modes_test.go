package gpu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// apiKubeconfig serves the test pod and node from a simulated API server
// and returns a kubeconfig for it. With the Kubernetes API the exporter
// can tell a process outside every pod from one it cannot place, so the
// load's memory shows as unattributed use: the exporter's per-process
// numbers, compared with nvidia-smi's process list. Only the API server of
// the simulated node is used; its NVML stays in this process.
func apiKubeconfig(t testing.TB) string {
	t.Helper()
	sc, err := simulate.Parse([]byte(fmt.Sprintf(`node: %s
gpus: 1
pods:
  - namespace: %s
    name: %s
    containers:
      - {name: %s, resource: %s, devices: ["0"]}
allocatable:
  %s: ["0"]
`, testNode, testNamespace, testPod, testContainer, testResource, testResource)))
	if err != nil {
		t.Fatal(err)
	}
	node, err := simulate.Start(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: sim, cluster: {server: %q}}]
contexts: [{name: sim, context: {cluster: sim, user: sim}}]
users: [{name: sim, user: {}}]
current-context: sim
`, node.RESTConfig.Host)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAPIKubeconfig checks that the real run's kubeconfig reaches an API
// server that lists the test pod on the test node.
func TestAPIKubeconfig(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", apiKubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + testNode})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Namespace != testNamespace || pods.Items[0].Name != testPod {
		t.Fatalf("pods %+v, want %s/%s", pods.Items, testNamespace, testPod)
	}
}

// migDevice is one MIG instance nvidia-smi -L lists.
type migDevice struct {
	Profile, UUID string
}

var (
	gpuLine = regexp.MustCompile(`^GPU \d+: .*\(UUID: (GPU-[^)]+)\)`)
	migLine = regexp.MustCompile(`^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)`)
)

// parseMIGList returns the MIG instances nvidia-smi -L lists under the GPU
// with this UUID.
func parseMIGList(out, gpuUUID string) []migDevice {
	var devs []migDevice
	under := false
	for _, line := range strings.Split(out, "\n") {
		if m := gpuLine.FindStringSubmatch(line); m != nil {
			under = m[1] == gpuUUID
			continue
		}
		if m := migLine.FindStringSubmatch(line); m != nil && under {
			devs = append(devs, migDevice{Profile: m[1], UUID: m[2]})
		}
	}
	return devs
}

func TestParseMIGList(t *testing.T) {
	// The shape of nvidia-smi -L on a partitioned H100 (R535 and newer).
	out := `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5a3e5c-7a3e-4f55-9bb6-3c2f08d5b1a1)
  MIG 3g.40gb     Device  0: (UUID: MIG-8f2c1a8e-0c1b-5d8e-9a55-2f3d1f0e7b11)
  MIG 1g.10gb     Device  1: (UUID: MIG-0d7e4c2a-9b8f-5e1d-8c3a-6f5b4a3e2d10)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 7g.80gb     Device  0: (UUID: MIG-99999999-8888-7777-6666-555555555555)
`
	got := parseMIGList(out, "GPU-5d5a3e5c-7a3e-4f55-9bb6-3c2f08d5b1a1")
	want := []migDevice{
		{"3g.40gb", "MIG-8f2c1a8e-0c1b-5d8e-9a55-2f3d1f0e7b11"},
		{"1g.10gb", "MIG-0d7e4c2a-9b8f-5e1d-8c3a-6f5b4a3e2d10"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseMIGList = %v, want %v", got, want)
	}
	if got := parseMIGList(out, "GPU-none"); len(got) != 0 {
		t.Errorf("instances of an absent GPU: %v", got)
	}
}
