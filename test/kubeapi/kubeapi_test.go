package kubeapi

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
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/kubecluster"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

const (
	node      = "gpu-node-1"
	namespace = "monitoring" // the exporter's, as in the chart
	saName    = "kube-gpu-exporter"
	saUser    = "system:serviceaccount:" + namespace + ":" + saName
	gpu       = "nvidia.com/gpu"
)

func TestMain(m *testing.M) {
	code := m.Run()
	tooltest.RemoveBuilt()
	os.Exit(code)
}

// TestKubeAPI runs the exporter against a real kube-apiserver with the
// chart's RBAC and a token of its ServiceAccount. The subtests share one
// cluster and run in order: starting it is most of the cost.
func TestKubeAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := startCluster(t)
	applyChartRBAC(t, c, true)
	setupNode(t, c)

	exp := startExporter(t, c, token(t, c, saName), "--dra.enabled")
	t.Run("RequestsAndCapacity", func(t *testing.T) { testRequestsAndCapacity(t, c, exp) })
	t.Run("ChangesVisibleWithin2s", func(t *testing.T) { testChanges(t, c, exp) })
	t.Run("Workloads", func(t *testing.T) { testWorkloads(t, c, exp) })
	t.Run("DRAResourceSlices", func(t *testing.T) { testDRA(t, c, exp) })
	t.Run("DRADeviceTaints", func(t *testing.T) { testDeviceTaints(t, c, exp) })
	t.Run("OnlyNodeScopedListWatch", func(t *testing.T) { testAudit(t, c) })
	t.Run("APIServerRestart", func(t *testing.T) { testRestart(t, c, exp, 20*time.Second) })
	t.Run("NoBinding", func(t *testing.T) { testNoBinding(t, c) })
	t.Run("MissingDRARule", func(t *testing.T) { testMissingDRARule(t, c) })
	t.Run("ClosedPort", func(t *testing.T) { testClosedPort(t, c) })
	t.Run("Unauthorized", func(t *testing.T) { testUnauthorized(t, c) })
	t.Run("WrongCA", func(t *testing.T) { testWrongCA(t, c) })
}

// TestKubeAPIListWatch runs the main cases against an API server that does
// not stream lists (as with etcd before 3.5.13), so the informers fall back
// to list and watch.
func TestKubeAPIListWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := startCluster(t, "--feature-gates=WatchList=false")
	applyChartRBAC(t, c, true)
	setupNode(t, c)
	exp := startExporter(t, c, token(t, c, saName), "--dra.enabled")
	t.Run("RequestsAndCapacity", func(t *testing.T) { testRequestsAndCapacity(t, c, exp) })
	t.Run("ChangesVisibleWithin2s", func(t *testing.T) { testChanges(t, c, exp) })
	t.Run("APIServerRestart", func(t *testing.T) { testRestart(t, c, exp, 5*time.Second) })
	t.Run("PlainListUsed", func(t *testing.T) {
		lists := 0
		for _, ev := range c.Audit(t) {
			if ev.User.Username == saUser && ev.Verb == "list" {
				lists++
			}
		}
		if lists == 0 {
			t.Error("the exporter never listed: the fallback to list and watch was not exercised")
		}
	})
}

// applyChartRBAC creates the namespace and the ServiceAccount, ClusterRole
// and ClusterRoleBinding the chart renders.
func applyChartRBAC(t *testing.T, c *kubecluster.Cluster, dra bool) {
	t.Helper()
	helm := tooltest.Require(t, "helm")
	out, err := exec.Command(helm, "template", saName, filepath.Join(tooltest.RepoRoot(), "deploy", "helm", "kube-gpu-exporter"),
		"--namespace", namespace, fmt.Sprintf("--set=dra.enabled=%v", dra),
		"--show-only=templates/serviceaccount.yaml", "--show-only=templates/rbac.yaml").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(out), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		switch meta.Kind {
		case "ServiceAccount":
			var sa corev1.ServiceAccount
			mustUnmarshal(t, doc, &sa)
			_, err = c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &sa, metav1.CreateOptions{})
		case "ClusterRole":
			var r rbacv1.ClusterRole
			mustUnmarshal(t, doc, &r)
			_, err = c.Client.RbacV1().ClusterRoles().Create(ctx, &r, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			mustUnmarshal(t, doc, &b)
			_, err = c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{})
		case "":
			continue
		default:
			t.Fatalf("unexpected %s in the chart's RBAC", meta.Kind)
		}
		if err != nil {
			t.Fatalf("apply %s: %v", meta.Kind, err)
		}
	}
}

func mustUnmarshal(t *testing.T, doc string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("rendered chart: %v", err)
	}
}

// token mints a token for a ServiceAccount of the exporter's namespace,
// creating any but the chart's.
func token(t *testing.T, c *kubecluster.Cluster, sa string) string {
	return c.Token(t, namespace, sa, sa != saName)
}

// startCluster starts the cluster these tests share. No controller manager
// runs here to create the namespaces' default ServiceAccounts, which the
// ServiceAccount admission plugin would wait for.
func startCluster(t *testing.T, extra ...string) *kubecluster.Cluster {
	return kubecluster.Start(t, append([]string{"--disable-admission-plugins=ServiceAccount"}, extra...)...)
}

func ptr[T any](v T) *T { return &v }

func gpus(n string) corev1.ResourceList { return corev1.ResourceList{gpu: k8sresource.MustParse(n)} }

// setupNode creates the node, with GPU capacity set through the status
// subresource as the kubelet does, and a namespace for workloads.
func setupNode(t *testing.T, c *kubecluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{node, "other-node"} {
		n, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.Capacity = corev1.ResourceList{gpu: k8sresource.MustParse("8"), corev1.ResourceCPU: k8sresource.MustParse("64")}
		n.Status.Allocatable = corev1.ResourceList{gpu: k8sresource.MustParse("7"), corev1.ResourceCPU: k8sresource.MustParse("63")}
		if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func container(name string, req, lim corev1.ResourceList) corev1.Container {
	return corev1.Container{Name: name, Image: "busybox", Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
}

func createPod(t *testing.T, c *kubecluster.Cluster, name, on string, init []corev1.Container, ctrs ...corev1.Container) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml"},
		Spec:       corev1.PodSpec{NodeName: on, InitContainers: init, Containers: ctrs},
	}
	if _, err := c.Client.CoreV1().Pods("ml").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startExporter runs the exporter on the cluster with token; no GPU
// driver and no kubelet socket: only the API source is under test.
func startExporter(t *testing.T, c *kubecluster.Cluster, token string, args ...string) *tooltest.Exporter {
	t.Helper()
	return startExporterAt(t, c.Kubeconfig(t, "exporter", token, ""), args...)
}

func startExporterAt(t *testing.T, kubeconfig string, args ...string) *tooltest.Exporter {
	t.Helper()
	bin := tooltest.ExporterBinary(t)
	return tooltest.StartExporter(t, bin, tooltest.Scraped,
		append([]string{
			"--kubeconfig=" + kubeconfig, "--kube.node-name=" + node,
			"--kubelet.pod-resources-socket=" + filepath.Join(t.TempDir(), "absent.sock"),
		}, args...)...)
}

func testRequestsAndCapacity(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := container("proxy", gpus("1"), gpus("1"))
	sidecar.RestartPolicy = &always
	createPod(t, c, "limit-only", node, nil, container("main", nil, gpus("2")))
	createPod(t, c, "with-init", node, []corev1.Container{container("setup", gpus("1"), gpus("1"))}, container("main", gpus("1"), gpus("1")))
	createPod(t, c, "with-sidecar", node, []corev1.Container{sidecar}, container("main", gpus("1"), gpus("1")))
	createPod(t, c, "elsewhere", "other-node", nil, container("main", gpus("4"), gpus("4")))
	waitFor(t, e, 10*time.Second, upKube,
		req("limit-only", "main", 2), lim("limit-only", "main", 2),
		req("with-init", "setup", 1), req("with-init", "main", 1),
		req("with-sidecar", "proxy", 1), req("with-sidecar", "main", 1),
		want{"containerGpuRequests", []string{l("pod", "elsewhere")}, -1},
		// The init container's GPU passes to the main container; the
		// sidecar runs beside it.
		podReq("with-init", 1), podReq("with-sidecar", 2), podReq("limit-only", 2),
		want{"nodeGpuCapacity", []string{l("resource", gpu)}, 8},
		want{"nodeGpuAllocatable", []string{l("resource", gpu)}, 7},
	)
}

func testChanges(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter) {
	ctx := context.Background()
	createPod(t, c, "added", node, nil, container("main", gpus("3"), gpus("3")))
	t.Logf("pod added: visible in %v", waitFor(t, e, 2*time.Second, req("added", "main", 3)))

	p, err := c.Client.CoreV1().Pods("ml").Get(ctx, "added", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodSucceeded
	if _, err := c.Client.CoreV1().Pods("ml").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod Succeeded: gone in %v", waitFor(t, e, 2*time.Second, want{"containerGpuRequests", []string{l("pod", "added")}, -1}))

	if err := c.Client.CoreV1().Pods("ml").Delete(ctx, "limit-only", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod deleted: gone in %v", waitFor(t, e, 2*time.Second, want{"containerGpuRequests", []string{l("pod", "limit-only")}, -1}))

	patch := []byte(`{"status":{"capacity":{"nvidia.com/gpu":"6"},"allocatable":{"nvidia.com/gpu":"5"}}}`)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	t.Logf("node patched: visible in %v", waitFor(t, e, 2*time.Second,
		want{"nodeGpuCapacity", []string{l("resource", gpu)}, 6}, want{"nodeGpuAllocatable", []string{l("resource", gpu)}, 5}))
}

// testWorkloads creates pods as a Deployment's ReplicaSet and a JobSet's
// Job create them (their owners need not exist: no garbage collector runs
// here) and reads the workload each is served under.
func testWorkloads(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter) {
	ctx := context.Background()
	controller := func(apiVersion, kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(name + "-uid"), Controller: ptr(true)}}
	}
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "vllm-6b7f9c-x7k2p", Labels: map[string]string{"app": "vllm", "pod-template-hash": "6b7f9c"},
			OwnerReferences: controller("apps/v1", "ReplicaSet", "vllm-6b7f9c")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "llama-workers-0-1-abcde",
			Labels:          map[string]string{"jobset.sigs.k8s.io/jobset-name": "llama", "batch.kubernetes.io/job-name": "llama-workers-0"},
			OwnerReferences: controller("batch/v1", "Job", "llama-workers-0")}},
	} {
		p.Namespace = "ml"
		p.Spec = corev1.PodSpec{NodeName: node, Containers: []corev1.Container{container("main", gpus("1"), gpus("1"))}}
		if _, err := c.Client.CoreV1().Pods("ml").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	info := func(pod, kind, name string) want {
		return want{"kube_gpu_pod_workload_info", []string{l("pod", pod), l("workload_kind", kind), l("workload_name", name)}, 1}
	}
	waitFor(t, e, 5*time.Second,
		info("vllm-6b7f9c-x7k2p", "Deployment", "vllm"),
		info("llama-workers-0-1-abcde", "JobSet", "llama"),
		info("with-init", "Pod", "with-init"),
		want{"kube_gpu_pod_workload_info", []string{l("pod", "elsewhere")}, -1},
	)
}

// testDRA publishes a ResourceSlice with uuid attributes, then a new
// generation of its pool with fewer devices: only the newest counts.
func testDRA(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter) {
	ctx := context.Background()
	const driver = "gpu.nvidia.com"
	slice := func(name string, gen int64, devices ...string) *resourcev1.ResourceSlice {
		s := &resourcev1.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourcev1.ResourceSliceSpec{
				Driver: driver, NodeName: ptr(node),
				Pool: resourcev1.ResourcePool{Name: node, Generation: gen, ResourceSliceCount: 1},
			},
		}
		for _, d := range devices {
			s.Spec.Devices = append(s.Spec.Devices, resourcev1.Device{Name: d, Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				"uuid": {StringValue: ptr("GPU-" + d)},
			}})
		}
		return s
	}
	if _, err := c.Client.ResourceV1().ResourceSlices().Create(ctx, slice("gen1", 1, "gpu-0", "gpu-1", "gpu-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	draCap := func(v float64) want { return want{"nodeGpuCapacity", []string{l("resource", driver)}, v} }
	waitFor(t, e, 3*time.Second, draCap(3), upKube)
	if _, err := c.Client.ResourceV1().ResourceSlices().Create(ctx, slice("gen2", 2, "gpu-0", "gpu-1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e, 3*time.Second, draCap(2))
	if err := c.Client.ResourceV1().ResourceSlices().Delete(ctx, "gen1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e, 3*time.Second, draCap(2))
}

// testAudit checks that the exporter only ever listed and watched this
// node's pods, its Node and its ResourceSlices, and the DeviceTaintRules.
func testAudit(t *testing.T, c *kubecluster.Cluster) {
	selectors := map[string]string{
		"pods": "fieldSelector=spec.nodeName%3D" + node, "nodes": "fieldSelector=metadata.name%3D" + node,
		"resourceslices": "fieldSelector=spec.nodeName%3D" + node,
		// Cluster-scoped, selecting devices by driver, pool and name: no
		// node to select on (docs/security.md).
		"devicetaintrules": "",
	}
	n := 0
	seen := map[string]bool{}
	events := c.Audit(t)
	users := map[string]int{}
	for _, ev := range events {
		users[ev.User.Username]++
		if ev.User.Username != saUser {
			continue
		}
		n++
		sel, ok := selectors[ev.ObjectRef.Resource]
		if !ok || (ev.Verb != "list" && ev.Verb != "watch") || ev.ObjectRef.Subresource != "" {
			t.Errorf("unexpected request: %s %s", ev.Verb, ev.RequestURI)
			continue
		}
		if !strings.Contains(ev.RequestURI, sel) {
			t.Errorf("%s %s without this node's field selector", ev.Verb, ev.RequestURI)
		}
		seen[ev.ObjectRef.Resource] = true
	}
	for res := range selectors {
		if !seen[res] {
			t.Errorf("the exporter never read %s: the audit covers nothing there", res)
		}
	}
	if n == 0 {
		t.Errorf("no request of the exporter in the audit log (%d events, by user %v)", len(events), users)
	}
}

// testDeviceTaints taints the GPUs testDRA left in this node's
// ResourceSlice (gpu-0, gpu-1 of generation 2): the driver's own taint on
// gpu-0 in the slice, and DeviceTaintRules naming gpu-1, the whole pool, and
// another node's pool. Each taint on this node's devices is served; the
// rule for the other pool is not; a deleted rule's taint goes.
func testDeviceTaints(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter) {
	ctx := context.Background()
	const driver = "gpu.nvidia.com"
	s, err := c.Client.ResourceV1().ResourceSlices().Get(ctx, "gen2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Devices[0].Taints = []resourcev1.DeviceTaint{{Key: "gpu.nvidia.com/xid", Value: "79", Effect: resourcev1.DeviceTaintEffectNoExecute}}
	if _, err := c.Client.ResourceV1().ResourceSlices().Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rule := func(name string, pool, device *string, key string, effect resourcev1.DeviceTaintEffect) {
		t.Helper()
		r := &resourcev1.DeviceTaintRule{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourcev1.DeviceTaintRuleSpec{
				DeviceSelector: &resourcev1.DeviceTaintSelector{Driver: ptr(driver), Pool: pool, Device: device},
				Taint:          resourcev1.DeviceTaint{Key: key, Effect: effect},
			},
		}
		if _, err := c.Client.ResourceV1().DeviceTaintRules().Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rule("drain-gpu-1", ptr(node), ptr("gpu-1"), "example.com/drain", resourcev1.DeviceTaintEffectNoSchedule)
	rule("pool-firmware", ptr(node), nil, "example.com/firmware", resourcev1.DeviceTaintEffectNone)
	rule("other-node", ptr("other-node"), nil, "example.com/elsewhere", resourcev1.DeviceTaintEffectNoExecute)
	taint := func(device, key, effect, rule string, v float64) want {
		return want{"kube_gpu_dra_device_taint", []string{l("driver", driver), l("pool", node), l("device", device), l("gpu_id", "GPU-"+device),
			l("key", key), l("effect", effect), l("rule", rule)}, v}
	}
	waitFor(t, e, 5*time.Second,
		taint("gpu-0", "gpu.nvidia.com/xid", "NoExecute", "", 1),
		taint("gpu-1", "example.com/drain", "NoSchedule", "drain-gpu-1", 1),
		taint("gpu-0", "example.com/firmware", "None", "pool-firmware", 1),
		taint("gpu-1", "example.com/firmware", "None", "pool-firmware", 1),
		want{"kube_gpu_dra_device_taint", []string{l("rule", "other-node")}, -1},
		upKube,
	)
	if err := c.Client.ResourceV1().DeviceTaintRules().Delete(ctx, "drain-gpu-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e, 5*time.Second, want{"kube_gpu_dra_device_taint", []string{l("rule", "drain-gpu-1")}, -1},
		taint("gpu-0", "gpu.nvidia.com/xid", "NoExecute", "", 1))
}
