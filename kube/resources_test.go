package kube

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// rl builds a ResourceList from name/quantity pairs.
func rl(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = k8sresource.MustParse(kv[i+1])
	}
	return out
}

func ctr(name string, req, lim corev1.ResourceList) corev1.Container {
	return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
}

func testPod(ns, name string, phase corev1.PodPhase, init, regular []corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "node-a", InitContainers: init, Containers: regular},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestPodContainerResources(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := ctr("sidecar", nil, rl("nvidia.com/gpu", "1"))
	sidecar.RestartPolicy = &always

	entry := func(pod, c, res, vendor string, req, lim float64) ContainerResources {
		return ContainerResources{Namespace: "ns", Pod: pod, PodUID: "uid-" + pod, Container: c,
			Resource: res, Vendor: vendor, Request: req, Limit: lim}
	}

	tests := []struct {
		name string
		pod  *corev1.Pod
		m    *resource.Matcher
		want []ContainerResources
	}{
		{
			name: "request and limit",
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", rl("nvidia.com/gpu", "2", "cpu", "1"), rl("nvidia.com/gpu", "2", "memory", "1Gi")),
			}),
			want: []ContainerResources{entry("p", "main", "nvidia.com/gpu", "nvidia", 2, 2)},
		},
		{
			name: "limit only defaults the request",
			pod: testPod("ns", "p", corev1.PodPending, nil, []corev1.Container{
				ctr("main", nil, rl("nvidia.com/gpu", "4")),
			}),
			want: []ContainerResources{entry("p", "main", "nvidia.com/gpu", "nvidia", 4, 4)},
		},
		{
			name: "request only reports the same limit",
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", rl("nvidia.com/gpu", "3"), nil),
			}),
			want: []ContainerResources{entry("p", "main", "nvidia.com/gpu", "nvidia", 3, 3)},
		},
		{
			name: "init, sidecar and regular containers, sorted by name",
			pod: testPod("ns", "p", corev1.PodRunning,
				[]corev1.Container{ctr("setup", nil, rl("nvidia.com/gpu", "1")), sidecar},
				[]corev1.Container{ctr("app", nil, rl("nvidia.com/gpu", "2")), ctr("cpu-only", rl("cpu", "1"), nil)}),
			want: []ContainerResources{
				entry("p", "app", "nvidia.com/gpu", "nvidia", 2, 2),
				entry("p", "setup", "nvidia.com/gpu", "nvidia", 1, 1),
				entry("p", "sidecar", "nvidia.com/gpu", "nvidia", 1, 1),
			},
		},
		{
			name: "several GPU resources on one container, MIG mixed strategy",
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", nil, rl("nvidia.com/mig-1g.10gb", "2", "nvidia.com/mig-3g.40gb", "1", "nvidia.com/gpu.shared", "1")),
			}),
			want: []ContainerResources{
				entry("p", "main", "nvidia.com/gpu.shared", "nvidia", 1, 1),
				entry("p", "main", "nvidia.com/mig-1g.10gb", "nvidia", 2, 2),
				entry("p", "main", "nvidia.com/mig-3g.40gb", "nvidia", 1, 1),
			},
		},
		{
			name: "AMD",
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", rl("amd.com/gpu", "1"), rl("amd.com/gpu", "1")),
			}),
			want: []ContainerResources{entry("p", "main", "amd.com/gpu", "amd", 1, 1)},
		},
		{
			name: "custom matcher excludes AMD",
			m:    resource.MustMatcher(resource.DefaultNVIDIA...),
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", nil, rl("amd.com/gpu", "1", "nvidia.com/gpu", "1")),
			}),
			want: []ContainerResources{entry("p", "main", "nvidia.com/gpu", "nvidia", 1, 1)},
		},
		{
			name: "no GPU resources",
			pod: testPod("ns", "p", corev1.PodRunning, nil, []corev1.Container{
				ctr("main", rl("cpu", "1", "example.com/nic", "1"), rl("cpu", "1")),
			}),
		},
		{
			name: "succeeded pod",
			pod: testPod("ns", "p", corev1.PodSucceeded, nil, []corev1.Container{
				ctr("main", nil, rl("nvidia.com/gpu", "1")),
			}),
		},
		{
			name: "failed pod",
			pod: testPod("ns", "p", corev1.PodFailed, nil, []corev1.Container{
				ctr("main", nil, rl("nvidia.com/gpu", "1")),
			}),
		},
		{name: "nil pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PodContainerResources(tt.pod, tt.m)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PodContainerResources() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestNodeGPUResources(t *testing.T) {
	node := func(capacity, allocatable corev1.ResourceList) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
			Status:     corev1.NodeStatus{Capacity: capacity, Allocatable: allocatable},
		}
	}
	tests := []struct {
		name string
		node *corev1.Node
		want NodeResources
	}{
		{
			name: "whole GPUs and time-sliced replicas",
			node: node(rl("nvidia.com/gpu", "8", "nvidia.com/gpu.shared", "4", "cpu", "64"),
				rl("nvidia.com/gpu", "7", "nvidia.com/gpu.shared", "4", "cpu", "63")),
			want: NodeResources{Found: true, Name: "node-a",
				Capacity: []ResourceQuantity{
					{Resource: "nvidia.com/gpu", Vendor: "nvidia", Value: 8},
					{Resource: "nvidia.com/gpu.shared", Vendor: "nvidia", Value: 4},
				},
				Allocatable: []ResourceQuantity{
					{Resource: "nvidia.com/gpu", Vendor: "nvidia", Value: 7},
					{Resource: "nvidia.com/gpu.shared", Vendor: "nvidia", Value: 4},
				},
			},
		},
		{
			name: "MIG mixed strategy and AMD",
			node: node(rl("nvidia.com/mig-1g.10gb", "7", "amd.com/gpu", "2"), rl("nvidia.com/mig-1g.10gb", "7")),
			want: NodeResources{Found: true, Name: "node-a",
				Capacity: []ResourceQuantity{
					{Resource: "amd.com/gpu", Vendor: "amd", Value: 2},
					{Resource: "nvidia.com/mig-1g.10gb", Vendor: "nvidia", Value: 7},
				},
				Allocatable: []ResourceQuantity{{Resource: "nvidia.com/mig-1g.10gb", Vendor: "nvidia", Value: 7}},
			},
		},
		{
			name: "no GPU resources",
			node: node(rl("cpu", "4", "memory", "16Gi"), rl("cpu", "4")),
			want: NodeResources{Found: true, Name: "node-a"},
		},
		{name: "nil node", want: NodeResources{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NodeGPUResources(tt.node, nil)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NodeGPUResources() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestContainerIDFromStatus(t *testing.T) {
	for in, want := range map[string]string{
		"containerd://0123abcd": "0123abcd",
		"cri-o://feed":          "feed",
		"docker://beef":         "beef",
		"0123abcd":              "0123abcd",
		"":                      "",
	} {
		if got := ContainerIDFromStatus(in); got != want {
			t.Errorf("ContainerIDFromStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTransformsKeepWhatIsReadAndAreIdempotent(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	always := corev1.ContainerRestartPolicyAlways
	sidecar := ctr("sidecar", rl("cpu", "1"), rl("nvidia.com/gpu", "1"))
	sidecar.RestartPolicy = &always
	pod := testPod("ns", "p", corev1.PodRunning, []corev1.Container{sidecar},
		[]corev1.Container{ctr("main", rl("cpu", "2", "nvidia.com/mig-1g.10gb", "1"), rl("nvidia.com/mig-1g.10gb", "1"))})
	pod.Annotations = map[string]string{"big": "annotation"}
	isController := true
	pod.Labels = map[string]string{"app": "x", "pod-template-hash": "5d8f7c"}
	pod.OwnerReferences = []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "ConfigMap", Name: "not-the-controller"},
		{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7c", UID: "rs-uid", Controller: &isController},
	}
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "B"}}
	pod.Spec.Containers[0].Image = "registry/image:tag"
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox"}}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://abc", Image: "registry/image:tag"}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady}}

	tf := podTransform(m, resource.DefaultDRADrivers())
	out1, err := tf(pod)
	if err != nil {
		t.Fatal(err)
	}
	slim := out1.(*corev1.Pod)
	if slim.Annotations != nil || slim.ManagedFields != nil || slim.Status.Conditions != nil {
		t.Errorf("metadata or conditions kept: %+v", slim)
	}
	if want := map[string]string{"pod-template-hash": "5d8f7c"}; !reflect.DeepEqual(slim.Labels, want) {
		t.Errorf("labels kept: %v, want %v", slim.Labels, want)
	}
	if len(slim.OwnerReferences) != 1 || slim.OwnerReferences[0].Name != "web-5d8f7c" {
		t.Errorf("owner references kept: %+v", slim.OwnerReferences)
	}
	if got, want := PodWorkloadOf(slim), (Workload{"Deployment", "web"}); got != want || PodWorkloadOf(pod) != want {
		t.Errorf("workload after transform %+v, before %+v, want %+v", got, PodWorkloadOf(pod), want)
	}
	if c := slim.Spec.Containers[0]; c.Env != nil || c.Image != "" || c.Resources.Requests.Cpu().Value() != 0 {
		t.Errorf("container not slimmed: %+v", c)
	}
	if got, want := PodContainerResources(slim, m), PodContainerResources(pod, m); !reflect.DeepEqual(got, want) {
		t.Errorf("resources changed by transform: %+v != %+v", got, want)
	}
	if slim.Spec.InitContainers[0].RestartPolicy == nil || *slim.Spec.InitContainers[0].RestartPolicy != always {
		t.Error("sidecar restart policy dropped")
	}
	ids := map[string]ContainerRef{}
	podContainerIDs(slim, ids)
	if ids["abc"].Container != "main" {
		t.Errorf("container ID lost: %+v", ids)
	}
	out2, err := tf(slim)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out1, out2) {
		t.Errorf("pod transform not idempotent:\n%+v\n%+v", out1, out2)
	}

	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"a": "b"}},
		Status: corev1.NodeStatus{
			Capacity:    rl("cpu", "8", "amd.com/gpu", "2"),
			Allocatable: rl("cpu", "7", "amd.com/gpu", "2"),
			Images:      []corev1.ContainerImage{{Names: []string{"x"}}},
		},
	}
	nt := nodeTransform(m)
	n1, _ := nt(node)
	n2, _ := nt(n1)
	if !reflect.DeepEqual(n1, n2) {
		t.Errorf("node transform not idempotent")
	}
	sn := n1.(*corev1.Node)
	if sn.Labels != nil || sn.Status.Images != nil || len(sn.Status.Capacity) != 1 {
		t.Errorf("node not slimmed: %+v", sn)
	}
	if got, want := NodeGPUResources(sn, m), NodeGPUResources(node, m); !reflect.DeepEqual(got, want) {
		t.Errorf("node resources changed by transform: %+v != %+v", got, want)
	}

	// Tombstones and other objects pass through untouched.
	tomb := "not a pod"
	if out, _ := tf(tomb); out != tomb {
		t.Errorf("non-pod changed: %v", out)
	}
}
