package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

func qty(s string) apiresource.Quantity { return apiresource.MustParse(s) }

// TestKubernetesSourceEndToEnd drives the collector with a real kube.Watcher
// over client-go's fake clientset: the four resource metrics come from the
// pod specs and the Node, the informers' last state survives an API outage
// (with up 0), and without the API the kubelet/NVML fallback serves.
func TestKubernetesSourceEndToEnd(t *testing.T) {
	s, u := dgxH100(t)
	always, isController := corev1.ContainerRestartPolicyAlways, true
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-1"}, Status: corev1.NodeStatus{
		Capacity:    corev1.ResourceList{"nvidia.com/gpu": qty("8"), "amd.com/gpu": qty("2"), corev1.ResourceCPU: qty("64")},
		Allocatable: corev1.ResourceList{"nvidia.com/gpu": qty("7"), "amd.com/gpu": qty("2"), corev1.ResourceCPU: qty("63")},
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "train-0", Namespace: "ml", UID: "uid-train",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "train", Controller: &isController}}},
		Spec: corev1.PodSpec{
			NodeName: "gpu-node-1",
			InitContainers: []corev1.Container{{Name: "sidecar", RestartPolicy: &always,
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"amd.com/gpu": qty("1")}}}},
			Containers: []corev1.Container{{Name: "main",
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": qty("1")}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	client := fake.NewClientset(node, pod)
	var down atomic.Bool
	var mu sync.Mutex
	var open []watch.Interface
	client.PrependReactor("list", "*", func(clienttesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	client.PrependWatchReactor("*", func(a clienttesting.Action) (bool, watch.Interface, error) {
		if down.Load() {
			return true, nil, errors.New("connection refused")
		}
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err == nil {
			mu.Lock()
			open = append(open, w)
			mu.Unlock()
		}
		return true, w, err
	})
	w := kube.NewWatcher(kubetest.FromClientset(client), kube.Config{NodeName: "gpu-node-1"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	syncCtx, cancelSync := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSync()
	if !w.WaitForSync(syncCtx) {
		t.Fatal("informers did not sync")
	}
	// The kubelet allocated the container its GPU.
	kubelet := staticKubelet{snap: &podresources.Snapshot{
		Containers:  []podresources.ContainerDevices{{Namespace: "ml", Pod: "train-0", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{u[0]}}},
		Allocatable: map[string][]string{"nvidia.com/gpu": {u[0]}},
	}}
	c := New(Config{NodeName: "gpu-node-1"}, s, kubelet, w)
	fromAPI := `
# HELP containerGpuLimits GPUs limited for the container, per GPU resource.
# TYPE containerGpuLimits gauge
containerGpuLimits{container="main",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0",resource="nvidia.com/gpu"} 1
containerGpuLimits{container="sidecar",gpu_vendor="amd",namespace="ml",node="gpu-node-1",pod="train-0",resource="amd.com/gpu"} 1
# HELP containerGpuRequests GPUs requested by the container, per GPU resource.
# TYPE containerGpuRequests gauge
containerGpuRequests{container="main",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0",resource="nvidia.com/gpu"} 1
containerGpuRequests{container="sidecar",gpu_vendor="amd",namespace="ml",node="gpu-node-1",pod="train-0",resource="amd.com/gpu"} 1
# HELP nodeGpuAllocatable GPUs Kubernetes can hand out on the node, per GPU resource.
# TYPE nodeGpuAllocatable gauge
nodeGpuAllocatable{gpu_vendor="amd",node="gpu-node-1",resource="amd.com/gpu"} 2
nodeGpuAllocatable{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 7
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
nodeGpuCapacity{gpu_vendor="amd",node="gpu-node-1",resource="amd.com/gpu"} 2
nodeGpuCapacity{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 8
# HELP kube_gpu_pod_workload_info 1 per pod holding or requesting GPUs: the workload that runs it, named from the pod's labels and controller (Deployment, StatefulSet, DaemonSet, Job, CronJob, JobSet, LeaderWorkerSet, PyTorchJob and the other Kubeflow jobs, RayCluster, RayJob, RayService, another controller's kind, or Pod for a pod without one).
# TYPE kube_gpu_pod_workload_info gauge
kube_gpu_pod_workload_info{namespace="ml",node="gpu-node-1",pod="train-0",workload_kind="StatefulSet",workload_name="train"} 1
`
	up := func(v string) string {
		return `
# HELP kube_gpu_exporter_up Whether the source answered in this scrape (1) or not (0).
# TYPE kube_gpu_exporter_up gauge
kube_gpu_exporter_up{source="kubelet"} 1
kube_gpu_exporter_up{source="kubernetes"} ` + v + `
kube_gpu_exporter_up{source="nvml"} 1
`
	}
	names := []string{"containerGpuRequests", "containerGpuLimits", "nodeGpuCapacity", "nodeGpuAllocatable", "kube_gpu_pod_workload_info", "kube_gpu_exporter_up"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(fromAPI+up("1")), names...); err != nil {
		t.Fatal(err)
	}

	// API outage: open watches end and every new request fails. The
	// informers' last state is still served; up says 0.
	down.Store(true)
	mu.Lock()
	for _, wch := range open {
		wch.Stop()
	}
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.CollectAndCompare(c, strings.NewReader(up("0")), "kube_gpu_exporter_up") != nil {
		if time.Now().After(deadline) {
			t.Fatal("up{source=\"kubernetes\"} still 1 ten seconds into the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(fromAPI), names[:5]...); err != nil {
		t.Fatalf("cached state not served during the outage: %v", err)
	}

	// Without the API: kubelet counts and NVML/kubelet capacity, and no
	// workload names.
	fallback := New(Config{NodeName: "gpu-node-1"}, s, kubelet, kube.Unavailable{Reason: errors.New("no API")})
	want := `
# HELP containerGpuRequests GPUs requested by the container, per GPU resource.
# TYPE containerGpuRequests gauge
containerGpuRequests{container="main",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0",resource="nvidia.com/gpu"} 1
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
nodeGpuCapacity{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 3
` + up("0")
	if err := testutil.CollectAndCompare(fallback, strings.NewReader(want), "containerGpuRequests", "nodeGpuCapacity", "kube_gpu_pod_workload_info", "kube_gpu_exporter_up"); err != nil {
		t.Fatal(err)
	}
}
