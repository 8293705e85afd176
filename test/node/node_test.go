package node

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// update records the kubelet's replies in the multi-GPU case as the
// reference the fake kubelet's shape is held against
// (internal/fakekubelet/testdata).
var update = flag.Bool("update", false, "record the real kubelet's pod-resources replies into internal/fakekubelet/testdata")

func TestMain(m *testing.M) {
	code := m.Run()
	tooltest.RemoveBuilt()
	os.Exit(code)
}

// The plugins' devices: GPUs 0-7 whole, 0-3 on NUMA node 0 and 4-7 on
// node 1, GPU 3 on both (the kubelet then lists it once per node); GPUs 8
// and 9 as four time-slicing replicas each, on nodes 0 and 1. GPUs 10 and
// 11 go to the DRA driver (dra_test.go).
func wholeGPUs() map[string][]int64 {
	m := map[string][]int64{}
	for i := range 8 {
		m[simulate.UUID(i)] = []int64{int64(i / 4)}
	}
	m[simulate.UUID(3)] = []int64{0, 1}
	return m
}

func sharedGPUs() map[string][]int64 {
	m := map[string][]int64{}
	for i := 8; i < 10; i++ {
		for r := range 4 {
			m[fmt.Sprintf("%s::%d", simulate.UUID(i), r)] = []int64{int64(i - 8)}
		}
	}
	return m
}

// TestNode runs the cases in order on one node: bringing it up is most of
// the cost.
func TestNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a kubelet, containerd and a control plane")
	}
	n := startNode(t)
	whole := newPlugin(n.dir+"/device-plugins", "nvidia.com/gpu", wholeGPUs(), 0)
	shared := newPlugin(n.dir+"/device-plugins", "nvidia.com/gpu.shared", sharedGPUs(), 4)
	for _, p := range []*plugin{whole, shared} {
		if err := p.start(n.dir + "/device-plugins/kubelet.sock"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
	}
	n.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8, "nvidia.com/gpu.shared": 8})
	n.startDRA(t)
	n.createNamespace(t, testNamespace)
	addr := n.deployExporter(t)
	t.Logf("exporter at %s", addr)

	t.Run("MultiGPUContainers", func(t *testing.T) { testMultiGPU(t, n, addr) })
	t.Run("EightGPUsBothNUMANodes", func(t *testing.T) { testEight(t, n, addr) })
	t.Run("TimeSlicedReplicas", func(t *testing.T) { testTimeSliced(t, n, addr) })
	t.Run("DRAClaim", func(t *testing.T) { testDRA(t, n, addr) })
	t.Run("DeviceHealthInPodStatus", func(t *testing.T) { testDeviceHealth(t, n, addr, whole) })
	t.Run("KubeletRestart", func(t *testing.T) { testRestart(t, n, addr, "kubelet") })
	t.Run("DevicePluginRestart", func(t *testing.T) { testPluginRestart(t, n, addr, whole) })
	t.Run("ContainerdRestart", func(t *testing.T) { testRestart(t, n, addr, "containerd") })
	t.Run("GPUResetRunbook", func(t *testing.T) { testResetRunbook(t, n, addr) })
}

func gpuLimits(res string, count int64) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceName(res): *k8sresource.NewQuantity(count, k8sresource.DecimalSI)}}
}

// ctr is a container of the pause image asking for count of res.
func ctr(name, res string, count int64, args ...string) corev1.Container {
	c := corev1.Container{Name: name, Image: pauseImage, ImagePullPolicy: corev1.PullNever, Args: args}
	if count > 0 {
		c.Resources = gpuLimits(res, count)
	}
	return c
}

// createPod creates a pod for the scheduler to place, and waits for it to
// run.
func (n *kubeNode) createPod(t *testing.T, name string, init []corev1.Container, ctrs ...corev1.Container) {
	t.Helper()
	n.createPodWith(t, name, nil, init, ctrs...)
}

// createPodWith is createPod with a change to the pod's spec.
func (n *kubeNode) createPodWith(t *testing.T, name string, change func(*corev1.PodSpec), init []corev1.Container, ctrs ...corev1.Container) {
	t.Helper()
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
		Spec: corev1.PodSpec{
			InitContainers: init, Containers: ctrs, HostNetwork: true,
			TerminationGracePeriodSeconds: &zero, AutomountServiceAccountToken: new(bool),
		},
	}
	if change != nil {
		change(&pod.Spec)
	}
	if _, err := n.c.Client.CoreV1().Pods(testNamespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyNil(t, 60*time.Second, "pod "+name+" running", func() error {
		p, err := n.c.Client.CoreV1().Pods(testNamespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || !allReady(p) {
			return fmt.Errorf("%w %s", err, podState(p))
		}
		return nil
	})
}

func allReady(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if !c.Ready {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) > 0
}

// deletePod deletes a pod and waits until the kubelet no longer lists it.
func (n *kubeNode) deletePod(t *testing.T, name string) {
	t.Helper()
	if err := n.c.Client.CoreV1().Pods(testNamespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyNil(t, 60*time.Second, "pod "+name+" gone", func() error {
		_, err := n.c.Client.CoreV1().Pods(testNamespace).Get(context.Background(), name, metav1.GetOptions{})
		listed := false
		for _, p := range n.kubeletList(t).GetPodResources() {
			listed = listed || (p.GetNamespace() == testNamespace && p.GetName() == name)
		}
		if err == nil || listed {
			return fmt.Errorf("in the API: %v, listed by the kubelet: %v", err == nil, listed)
		}
		return nil
	})
}

func (n *kubeNode) createNamespace(t *testing.T, name string) {
	ctx := context.Background()
	if _, err := n.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount admission plugin refuses pods until the
	// controller manager has made the namespace's default ServiceAccount.
	testkit.EventuallyNil(t, 30*time.Second, "default ServiceAccount in "+name, func() error {
		_, err := n.c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitAllocatable waits until the Node offers want of each resource.
func (n *kubeNode) waitAllocatable(t *testing.T, want map[string]int64) {
	t.Helper()
	testkit.EventuallyNil(t, 60*time.Second, fmt.Sprintf("allocatable %v", want), func() error {
		node, err := n.c.Client.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for res, v := range want {
			if q := node.Status.Allocatable[corev1.ResourceName(res)]; q.Value() != v {
				return fmt.Errorf("%s is %s", res, q.String())
			}
		}
		return nil
	})
}

func holder(pod, ctr string, gpus ...int) []string {
	var out []string
	for _, g := range gpus {
		out = append(out, fmt.Sprintf("%s/%s/%s %s", testNamespace, pod, ctr, simulate.UUID(g)))
	}
	return out
}

// Containers with one, two and eight GPUs each hold all of theirs: the
// kubelet lists a container's GPUs one entry per device.
func testMultiGPU(t *testing.T, n *kubeNode, addr string) {
	n.createPod(t, "multi",
		[]corev1.Container{
			ctr("setup", "nvidia.com/gpu", 1, "exit"),
			func() corev1.Container {
				c := ctr("sidecar", "nvidia.com/gpu", 1)
				always := corev1.ContainerRestartPolicyAlways
				c.RestartPolicy = &always
				return c
			}(),
		},
		ctr("one", "nvidia.com/gpu", 1), ctr("two", "nvidia.com/gpu", 2), ctr("none", "", 0))
	got := holders(n.kubeletList(t))
	per := map[string]int{}
	for _, h := range got {
		holder, _, _ := strings.Cut(h, " ")
		per[holder]++
	}
	want := map[string]int{"e2e/multi/sidecar": 1, "e2e/multi/one": 1, "e2e/multi/two": 2}
	for k, v := range want {
		if per[k] != v {
			t.Errorf("kubelet lists %d GPUs for %s, want %d: %q", per[k], k, v, got)
		}
	}
	n.waitAgree(t, addr, got, 30*time.Second)
	if *update {
		n.record(t)
	}
	n.deletePod(t, "multi")
	n.waitAgree(t, addr, nil, 30*time.Second)
}

// A container with all eight whole GPUs, across both NUMA nodes and with
// GPU 3 listed once per node, holds each once; deleted and created again
// under the same name it holds them again.
func testEight(t *testing.T, n *kubeNode, addr string) {
	for range 2 {
		n.createPod(t, "eight", nil, ctr("main", "nvidia.com/gpu", 8))
		n.waitAgree(t, addr, holder("eight", "main", 0, 1, 2, 3, 4, 5, 6, 7), 30*time.Second)
		n.deletePod(t, "eight")
		n.waitAgree(t, addr, nil, 30*time.Second)
	}
}

// Time-slicing replicas: a container given two replicas of one GPU holds
// that GPU once; two containers on one GPU both hold it.
func testTimeSliced(t *testing.T, n *kubeNode, addr string) {
	n.createPod(t, "shared", nil, ctr("a", "nvidia.com/gpu.shared", 2), ctr("b", "nvidia.com/gpu.shared", 1))
	replicas := 0
	for _, p := range n.kubeletList(t).GetPodResources() {
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if p.GetName() == "shared" && c.GetName() == "a" {
					replicas += len(d.GetDeviceIds())
				}
			}
		}
	}
	if replicas != 2 {
		t.Fatalf("container a holds %d replicas, want 2", replicas)
	}
	n.waitAgree(t, addr, append(holder("shared", "a", 8), holder("shared", "b", 8)...), 30*time.Second)
}

// The pods of the cases before stay running through the restarts below.
func runningHolders() []string {
	return append(holder("shared", "a", 8), holder("shared", "b", 8)...)
}

// testRestart restarts the kubelet or containerd under a scraper that
// reads every 100 ms: no scrape may lose or gain a container, and the
// containers' GPU-seconds never go back.
func testRestart(t *testing.T, n *kubeNode, addr, what string) {
	want := runningHolders()
	n.waitAgree(t, addr, want, 30*time.Second)
	w := watchScrapes(t, addr, want)
	n.stop(what, syscall.SIGTERM)
	switch what {
	case "kubelet":
		n.startKubelet(t)
	case "containerd":
		n.run(t, "containerd", "--config="+n.dir+"/containerd.toml")
		n.waitContainerd(t)
	}
	n.waitReady(t, 60*time.Second)
	n.waitAgree(t, addr, want, 60*time.Second)
	time.Sleep(3 * time.Second) // and a while after
	w.stop(t)
	logKubeletErrors(t, addr)
}

// logKubeletErrors logs the exporter's kubelet error counters: how often a
// restart window was bridged.
func logKubeletErrors(t *testing.T, addr string) {
	s, err := tooltest.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range s {
		if strings.HasPrefix(k, "kube_gpu_exporter_errors_total{") && label(k, "source") == "kubelet" {
			t.Logf("%s %v", k, v)
		}
	}
}

// testPluginRestart stops the whole-GPU plugin and starts it again; the
// kubelet keeps its allocations and the exporter its series.
func testPluginRestart(t *testing.T, n *kubeNode, addr string, p *plugin) {
	want := runningHolders()
	w := watchScrapes(t, addr, want)
	p.stop()
	time.Sleep(2 * time.Second)
	if err := p.start(n.dir + "/device-plugins/kubelet.sock"); err != nil {
		t.Fatal(err)
	}
	n.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})
	n.waitAgree(t, addr, want, 30*time.Second)
	w.stop(t)
	logKubeletErrors(t, addr)
}

// record writes the kubelet's List and GetAllocatableResources replies as
// JSON, the exporter's pod and other churn left out of nothing: the reply
// as the kubelet gave it.
func (n *kubeNode) record(t *testing.T) {
	list, alloc, err := n.kubeletReplies()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tooltest.RepoRoot(), "internal", "fakekubelet", "testdata")
	for name, m := range map[string]proto.Message{"kubelet-list.json": list, "kubelet-allocatable.json": alloc} {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// resetTaint is the taint docs/alerts.md has the operator put on a node
// before `nvidia-smi -r`: the exporter holds NVML open, which makes the
// reset refuse, and it tolerates no such taint, so it leaves the node.
const resetTaint = "kube-gpu-exporter/gpu-reset"

// The GPU-reset runbook on the real node: the taint takes the chart's
// exporter off the node (nothing of it keeps NVML open) along with every
// workload that does not tolerate it (the runbook drains them first), and
// removing the taint brings the exporter back, serving what the kubelet
// says of a pod started after the reset. It runs last: the case pods are
// gone after it.
func testResetRunbook(t *testing.T, n *kubeNode, addr string) {
	ctx := context.Background()
	setTaints := func(taints []corev1.Taint) {
		t.Helper()
		node, err := n.c.Client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.Taints = taints
		if _, err := n.c.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setTaints([]corev1.Taint{{Key: resetTaint, Value: "true", Effect: corev1.TaintEffectNoExecute}})
	testkit.EventuallyNil(t, 60*time.Second, "the exporter off the tainted node", func() error {
		listed := false
		for _, p := range n.kubeletList(t).GetPodResources() {
			listed = listed || p.GetNamespace() == exporterNamespace
		}
		if _, err := tooltest.Scrape(addr); err == nil || listed {
			return fmt.Errorf("it still answers (%v) or is listed by the kubelet (%v)", err == nil, listed)
		}
		return nil
	})
	setTaints(nil)
	n.waitExporterPod(t, 60*time.Second)
	n.createPod(t, "after-reset", nil, ctr("main", "nvidia.com/gpu", 2))
	if want := holders(n.kubeletList(t)); len(want) != 2 {
		t.Fatalf("the kubelet lists %q, want the new pod's 2 GPUs only", want)
	} else {
		n.waitAgree(t, addr, want, 60*time.Second)
	}
}
