package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// setHealth marks a device healthy or not and sends the plugin's devices
// again on ListAndWatch, as a device plugin does when it sees an Xid.
func (p *plugin) setHealth(id string, healthy bool) {
	p.mu.Lock()
	p.unhealthy[id] = !healthy
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// testDeviceHealth has the device plugin mark a held GPU unhealthy: the
// kubelet writes it into the pod's status (allocatedResourcesStatus,
// KEP-4680, on by default in 1.36 and newer), the exporter serves it beside
// NVML's health, and GPUDeviceUnhealthy fires on the series it served
// (promtool). Healthy again, the series follows back; the pod is deleted
// and the node offers its eight GPUs again for the cases after.
func testDeviceHealth(t *testing.T, n *kubeNode, addr string, p *plugin) {
	n.createPod(t, "sick", nil, ctr("main", "nvidia.com/gpu", 1))
	var id string
	// Whatever fails, the cases after get the node back as it was: the
	// device healthy (offered again) and the pod gone.
	t.Cleanup(func() {
		if id != "" {
			p.setHealth(id, true)
		}
		n.deletePod(t, "sick")
		n.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})
	})
	held := holders(n.kubeletList(t))
	for _, h := range held {
		if rest, ok := strings.CutPrefix(h, testNamespace+"/sick/main "); ok {
			id = rest // whole GPUs: the device ID is the UUID
		}
	}
	if id == "" {
		t.Fatalf("the kubelet lists no GPU for sick/main: %q", held)
	}
	l := func(name, value string) string { return fmt.Sprintf("%s=%q", name, value) }
	series := func(status string) []string {
		return []string{l("namespace", testNamespace), l("pod", "sick"), l("container", "main"), l("resource", "nvidia.com/gpu"),
			l("device_id", id), l("gpu_id", id), l("status", status)}
	}
	const family = "kube_gpu_container_kubelet_health_status"
	waitSeries := func(status string) {
		t.Helper()
		testkit.EventuallyNil(t, 60*time.Second, "kubelet health "+status+" served", func() error {
			s, err := tooltest.Scrape(addr)
			if err != nil {
				return err
			}
			if v, ok := s.Get(family, series(status)...); !ok || v != 1 {
				return fmt.Errorf("%s%v = %v, %v; all: %v", family, series(status), v, ok, matching(s, family))
			}
			if n := s.Count(family, l("pod", "sick")); n != 1 {
				return fmt.Errorf("%d series for the pod, want 1: %v", n, matching(s, family))
			}
			return nil
		})
	}
	waitSeries("healthy")

	start := time.Now()
	p.setHealth(id, false)
	testkit.EventuallyNil(t, 60*time.Second, "the kubelet writes Unhealthy into the pod's status", func() error {
		pod, err := n.c.Client.CoreV1().Pods(testNamespace).Get(context.Background(), "sick", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cs := range pod.Status.ContainerStatuses {
			for _, rs := range cs.AllocatedResourcesStatus {
				for _, r := range rs.Resources {
					if string(r.ResourceID) == id && r.Health == corev1.ResourceHealthStatusUnhealthy {
						return nil
					}
				}
			}
		}
		return fmt.Errorf("status %+v", pod.Status.ContainerStatuses)
	})
	t.Logf("pod status Unhealthy after %v", time.Since(start))
	waitSeries("unhealthy")
	t.Logf("served after %v", time.Since(start))

	s, err := tooltest.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	checkAlert(t, s, fmt.Sprintf(`
              severity: warning
              node: %[1]s
              namespace: %[2]s
              pod: sick
              container: main
              gpu_id: %[3]s
              resource: nvidia.com/gpu
              device_id: %[3]s
              source: kubelet
            exp_annotations:
              summary: A container holds a GPU that Kubernetes or NVML calls unhealthy.
              description: >-
                Container main of pod %[2]s/sick on node %[1]s holds GPU %[3]s, which the kubelet reports unhealthy
                in the pod's status, as its device plugin or DRA driver said (nvidia.com/gpu %[3]s).
              runbook_url: https://github.com/kube-gpu-exporter/kube-gpu-exporter/blob/main/docs/alerts.md#gpudeviceunhealthy`,
		n.name, testNamespace, id))

	p.setHealth(id, true)
	waitSeries("healthy")
}

// matching lists the scraped series of one family, for failure messages.
func matching(s tooltest.Series, family string) []string {
	var out []string
	for k := range s {
		if strings.HasPrefix(k, family+"{") {
			out = append(out, k)
		}
	}
	return out
}

// checkAlert evaluates deploy/prometheus/alerts.rules.yaml with promtool
// on the pod's health series as scraped, held for 10 minutes, and wants
// GPUDeviceUnhealthy firing with the labels and annotations given (YAML,
// exp_labels and what follows).
func checkAlert(t *testing.T, s tooltest.Series, labels string) {
	t.Helper()
	promtool := tooltest.Require(t, "promtool")
	var input strings.Builder
	for k, v := range s {
		if (strings.HasPrefix(k, "kube_gpu_container_kubelet_health_status{") || strings.HasPrefix(k, "kube_gpu_container_health_status{")) &&
			strings.Contains(k, `pod="sick"`) {
			fmt.Fprintf(&input, "      - series: '%s'\n        values: '%g+0x10'\n", k, v)
		}
	}
	rules := filepath.Join(tooltest.RepoRoot(), "deploy", "prometheus", "alerts.rules.yaml")
	test := fmt.Sprintf(`rule_files: [%q]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
%s    alert_rule_test:
      - eval_time: 5m
        alertname: GPUDeviceUnhealthy
        exp_alerts:
          - exp_labels:%s
`, rules, input.String(), labels)
	file := filepath.Join(t.TempDir(), "alert_test.yaml")
	if err := os.WriteFile(file, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool on the scraped series: %v\n%s\n%s", err, out, test)
	}
}
