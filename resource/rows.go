package resource

import (
	"cmp"
	"slices"
)

// ContainerResource is one container's request and limit of one GPU
// resource. The Kubernetes API, the kubelet and DRA claims all produce it,
// and the collector turns it into containerGpuRequests/containerGpuLimits.
type ContainerResource struct {
	Namespace, Pod, Container, Resource, Vendor string
	Request, Limit                              float64
}

// NodeResource is the node's capacity and allocatable of one GPU resource.
// A side the source cannot tell is marked absent rather than made up.
type NodeResource struct {
	Resource, Vendor string
	Capacity         float64
	HasCapacity      bool
	Allocatable      float64
	HasAllocatable   bool
}

// Key is the (namespace, pod, container, name) of one row of a per-container
// list; Name is whatever tells a container's rows apart (a resource, a
// device UUID, a claimed device). Every such list the exporter keeps is
// sorted by Compare, so the exposition is stable between scrapes and the
// sources' lists line up.
type Key struct{ Namespace, Pod, Container, Name string }

// Compare orders keys by namespace, pod, container, then name.
func Compare(a, b Key) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod),
		cmp.Compare(a.Container, b.Container), cmp.Compare(a.Name, b.Name))
}

// SortByKey sorts s stably in Compare order of key.
func SortByKey[T any](s []T, key func(*T) Key) {
	slices.SortStableFunc(s, func(a, b T) int { return Compare(key(&a), key(&b)) })
}

// ContainerResourceKey is the sort key of a ContainerResource.
func ContainerResourceKey(c *ContainerResource) Key {
	return Key{c.Namespace, c.Pod, c.Container, c.Resource}
}

// SortContainerResources sorts requests by container, then resource.
func SortContainerResources(s []ContainerResource) { SortByKey(s, ContainerResourceKey) }

// PodResource is what one pod holds of one GPU resource as the scheduler
// counts it: the larger of its largest init container (plus the sidecars
// started before it) and the sum of its containers and sidecars. Summing
// containers would count a GPU an init container hands over to the main
// container twice.
type PodResource struct {
	Namespace, Pod, Resource, Vendor string
	Request                          float64
}

// SortPodResources sorts pod resources by namespace, pod and resource.
func SortPodResources(s []PodResource) {
	SortByKey(s, func(r *PodResource) Key { return Key{Namespace: r.Namespace, Pod: r.Pod, Name: r.Resource} })
}

// SortNodeResources sorts node resources by resource name.
func SortNodeResources(s []NodeResource) {
	slices.SortStableFunc(s, func(a, b NodeResource) int { return cmp.Compare(a.Resource, b.Resource) })
}
