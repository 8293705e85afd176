package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// The plain data the collector joins is defined by the packages that
// produce it; these names keep Join's signature readable.
type (
	// Specs is what the Kubernetes API says about this node's GPUs.
	Specs = kube.Specs
	// PodLookup resolves the pod UIDs and container IDs found in cgroups.
	PodLookup = kube.PodLookup
	// DRALookup resolves a DRA claim's device to its NVML UUID.
	DRALookup = kube.DRALookup
	// ContainerResource is one container's request and limit of a resource.
	ContainerResource = resource.ContainerResource
	// NodeResource is the node's capacity and allocatable of a resource.
	NodeResource = resource.NodeResource
	// PodResource is one pod's effective request of one GPU resource.
	PodResource = resource.PodResource
	// OwnerResult is what the cgroup of a GPU process said.
	OwnerResult = cgroup.Result
)
