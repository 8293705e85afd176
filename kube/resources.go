package kube

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// ContainerResources is what one container asks for of one GPU resource.
// A container with several GPU resources (for example two MIG profiles)
// yields one ContainerResources per resource, so that the collector can emit
// one containerGpuRequests/containerGpuLimits series per resource label.
type ContainerResources struct {
	Namespace string
	Pod       string
	PodUID    string
	Container string
	Resource  string
	Vendor    string
	Request   float64
	Limit     float64
}

// ResourceQuantity is one GPU resource of a node with its amount; it carries
// the vendor so the collector does not have to consult the matcher again.
type ResourceQuantity struct {
	Resource string
	Vendor   string
	Value    float64
}

// NodeResources is the GPU part of a Node's status. Found is false while the
// Node object is unknown (not yet listed, or the node name is wrong), so the
// collector can tell "no GPUs" from "no data".
type NodeResources struct {
	Found       bool
	Name        string
	Capacity    []ResourceQuantity
	Allocatable []ResourceQuantity
}

// PodRef names a pod; it is the answer of a pod-UID lookup used to attribute
// GPU processes (whose cgroup carries the pod UID) to a pod.
type PodRef struct {
	Namespace string
	Name      string
	UID       string
}

// ContainerRef names a container; it is the answer of a container-ID lookup
// used to attribute GPU processes (whose cgroup carries the container ID) to
// a container.
type ContainerRef struct {
	Namespace string
	Pod       string
	PodUID    string
	Container string
}

// defaultMatcher is used when the caller passes no matcher, so that a zero
// Config still counts the well-known GPU resources.
func defaultMatcher(m *resource.Matcher) *resource.Matcher {
	if m != nil {
		return m
	}
	return resource.MustMatcher(resource.DefaultAll...)
}

// podIsTerminal reports whether a pod no longer holds its resources: the
// kubelet releases devices of Succeeded and Failed pods, so reporting their
// requests would overstate what is allocated on the node.
func podIsTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// PodContainerResources lists the GPU requests and limits of every init and
// regular container of pod, sorted by container then resource. Terminal pods
// (Succeeded, Failed) give nothing. For extended resources Kubernetes
// requires request == limit and defaults a missing request to the limit, so
// when only one of the two is set both fields report it. Non-GPU resources
// (as decided by m; nil means resource.DefaultAll) are ignored.
func PodContainerResources(pod *corev1.Pod, m *resource.Matcher) []ContainerResources {
	if pod == nil || podIsTerminal(pod) {
		return nil
	}
	m = defaultMatcher(m)
	var out []ContainerResources
	add := func(c *corev1.Container) {
		for _, name := range gpuResourceNames(c.Resources, m) {
			vendor, _ := m.Vendor(name)
			req, hasReq := quantity(c.Resources.Requests, name)
			lim, hasLim := quantity(c.Resources.Limits, name)
			switch {
			case !hasReq:
				req = lim
			case !hasLim:
				lim = req
			}
			out = append(out, ContainerResources{
				Namespace: pod.Namespace,
				Pod:       pod.Name,
				PodUID:    string(pod.UID),
				Container: c.Name,
				Resource:  name,
				Vendor:    vendor,
				Request:   req,
				Limit:     lim,
			})
		}
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i])
	}
	slices.SortFunc(out, compareContainerResources)
	return out
}

// PodGPURequests returns the effective GPU request of a non-terminal pod per
// resource, as the scheduler reserves it: the maximum of the sum of its
// regular containers and sidecars (restartable init containers) and, for
// each other init container, its request plus the sidecars started before
// it. Sidecars started after an init container do not run beside it.
func PodGPURequests(pod *corev1.Pod, m *resource.Matcher) []resource.PodResource {
	if pod == nil || podIsTerminal(pod) {
		return nil
	}
	m = defaultMatcher(m)
	request := func(c *corev1.Container, name string) float64 {
		req, ok := quantity(c.Resources.Requests, name)
		if !ok {
			req, _ = quantity(c.Resources.Limits, name) // defaulted to the limit
		}
		return req
	}
	names := map[string]bool{}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			for _, n := range gpuResourceNames(list[i].Resources, m) {
				names[n] = true
			}
		}
	}
	var out []resource.PodResource
	for name := range names {
		var sidecars, initMax, regular float64
		for i := range pod.Spec.InitContainers {
			c := &pod.Spec.InitContainers[i]
			r := request(c, name)
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				sidecars += r
				initMax = max(initMax, sidecars)
				continue
			}
			initMax = max(initMax, sidecars+r)
		}
		for i := range pod.Spec.Containers {
			regular += request(&pod.Spec.Containers[i], name)
		}
		vendor, _ := m.Vendor(name)
		out = append(out, resource.PodResource{
			Namespace: pod.Namespace, Pod: pod.Name, Resource: name, Vendor: vendor,
			Request: max(initMax, regular+sidecars),
		})
	}
	resource.SortPodResources(out)
	return out
}

// compareContainerResources orders entries so that output, and therefore
// the exposition downstream, is stable between scrapes.
func compareContainerResources(a, b ContainerResources) int {
	return cmp.Or(
		resource.Compare(
			resource.Key{Namespace: a.Namespace, Pod: a.Pod, Container: a.Container, Name: a.Resource},
			resource.Key{Namespace: b.Namespace, Pod: b.Pod, Container: b.Container, Name: b.Resource}),
		strings.Compare(a.PodUID, b.PodUID),
	)
}

// gpuResourceNames returns the sorted union of GPU resource names found in
// requests and limits.
func gpuResourceNames(r corev1.ResourceRequirements, m *resource.Matcher) []string {
	var names []string
	for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
		for name := range list {
			if _, ok := m.Vendor(string(name)); ok && !slices.Contains(names, string(name)) {
				names = append(names, string(name))
			}
		}
	}
	slices.Sort(names)
	return names
}

func quantity(list corev1.ResourceList, name string) (float64, bool) {
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return 0, false
	}
	return q.AsApproximateFloat64(), true
}

// NodeGPUResources extracts the GPU resources of node's capacity and
// allocatable, one entry per resource, sorted by name. A node without GPU
// resources gives empty lists (Found is still true: the node is known).
func NodeGPUResources(node *corev1.Node, m *resource.Matcher) NodeResources {
	if node == nil {
		return NodeResources{}
	}
	m = defaultMatcher(m)
	return NodeResources{
		Found:       true,
		Name:        node.Name,
		Capacity:    gpuQuantities(node.Status.Capacity, m),
		Allocatable: gpuQuantities(node.Status.Allocatable, m),
	}
}

func gpuQuantities(list corev1.ResourceList, m *resource.Matcher) []ResourceQuantity {
	var out []ResourceQuantity
	for name, q := range list {
		vendor, ok := m.Vendor(string(name))
		if !ok {
			continue
		}
		out = append(out, ResourceQuantity{Resource: string(name), Vendor: vendor, Value: q.AsApproximateFloat64()})
	}
	slices.SortFunc(out, func(a, b ResourceQuantity) int { return strings.Compare(a.Resource, b.Resource) })
	return out
}

// gpuResourceList keeps only the GPU entries of list; it is used by the
// informer transform so that the cache does not hold cpu, memory and other
// quantities nobody reads.
func gpuResourceList(list corev1.ResourceList, m *resource.Matcher) corev1.ResourceList {
	var out corev1.ResourceList
	for name, q := range list {
		if _, ok := m.Vendor(string(name)); !ok {
			continue
		}
		if out == nil {
			out = corev1.ResourceList{}
		}
		out[name] = q.DeepCopy()
	}
	return out
}

// ContainerIDFromStatus strips the runtime scheme from a status container ID
// ("containerd://abc" -> "abc"), which is the form found in cgroup paths. It
// returns "" for an empty ID (a container not started yet).
func ContainerIDFromStatus(id string) string {
	if _, rest, ok := strings.Cut(id, "://"); ok {
		return rest
	}
	return id
}

// podContainerIDs maps the runtime container IDs of every init, regular and
// ephemeral container status of pod to the container they name.
func podContainerIDs(pod *corev1.Pod, into map[string]ContainerRef) {
	for _, statuses := range [][]corev1.ContainerStatus{
		pod.Status.InitContainerStatuses,
		pod.Status.ContainerStatuses,
		pod.Status.EphemeralContainerStatuses,
	} {
		for _, st := range statuses {
			id := ContainerIDFromStatus(st.ContainerID)
			if id == "" {
				continue
			}
			into[id] = ContainerRef{Namespace: pod.Namespace, Pod: pod.Name, PodUID: string(pod.UID), Container: st.Name}
		}
	}
}
