package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// PodLookup resolves the pod UIDs and container IDs found in the cgroups of
// GPU processes. Snapshot implements it.
type PodLookup interface {
	PodByUID(uid string) (PodRef, bool)
	ContainerByID(id string) (ContainerRef, bool)
}

// DRALookup resolves a device allocated through a DRA claim, as the kubelet
// names it (driver, pool, device), to its NVML UUID through the node's
// ResourceSlices. Snapshot implements it.
type DRALookup interface {
	DRADeviceUUID(driver, pool, device string) (string, bool)
}

// WorkloadLookup names the workload that runs a pod of this node.
// Snapshot implements it.
type WorkloadLookup interface {
	PodWorkload(namespace, pod string) (Workload, bool)
}

// Specs is what the Kubernetes API says about this node's GPUs, in the
// shape the collector joins: when present it replaces the kubelet-derived
// requests, limits, capacity and allocatable.
type Specs struct {
	Containers []resource.ContainerResource
	// Pods is the effective GPU request of each pod (init containers
	// counted as the scheduler does), per resource.
	Pods []resource.PodResource
	// NodeFound is false when the Node object has not been seen.
	NodeFound bool
	Node      []resource.NodeResource
	// Lookup resolves pod UIDs and container IDs; nil when unknown.
	Lookup PodLookup
	// Workloads names the workload of each pod; nil when unknown.
	Workloads WorkloadLookup
	// DeviceHealth is the kubelet's health of the GPU devices allocated to
	// containers, as pod statuses carry it (KEP-4680), sorted by container
	// and device.
	DeviceHealth []ContainerDeviceHealth
	// DRA resolves devices allocated through DRA claims; nil when the
	// node's ResourceSlices are not read.
	DRA DRALookup
	// DRANode is, per DRA driver, the devices the node's ResourceSlices
	// publish: its capacity and allocatable.
	DRANode []resource.NodeResource
	// DRAUUIDs are the NVML UUIDs of the devices DRA drivers publish; the
	// kubelet-derived capacity does not count them as device-plugin GPUs.
	DRAUUIDs map[string]bool
	// DRATaints are the taints on those devices (KEP-5055).
	DRATaints []DRADeviceTaint
}

// Specs converts the informers' view into the collector's plain data.
func (s Snapshot) Specs() *Specs {
	out := &Specs{NodeFound: s.Node.Found, Lookup: s, Workloads: s}
	out.Containers = make([]resource.ContainerResource, 0, len(s.Containers))
	for _, c := range s.Containers {
		out.Containers = append(out.Containers, resource.ContainerResource{
			Namespace: c.Namespace, Pod: c.Pod, Container: c.Container,
			Resource: c.Resource, Vendor: c.Vendor, Request: c.Request, Limit: c.Limit,
		})
	}
	out.Pods = s.Pods
	out.DeviceHealth = s.DeviceHealth
	out.Node = s.Node.Resources()
	if s.DRAEnabled {
		out.DRA = s
		out.DRAUUIDs = map[string]bool{}
		out.DRATaints = s.DRATaints
		for _, u := range s.DRADeviceUUIDs() {
			out.DRAUUIDs[u] = true
		}
		for _, d := range s.DRA {
			n := float64(d.Devices)
			out.DRANode = append(out.DRANode, resource.NodeResource{
				Resource: d.Driver, Vendor: DRAVendor(d.Driver),
				Capacity: n, HasCapacity: true, Allocatable: n, HasAllocatable: true,
			})
		}
	}
	return out
}

// Resources merges capacity and allocatable per resource, sorted by name.
func (n NodeResources) Resources() []resource.NodeResource {
	byRes := map[string]*resource.NodeResource{}
	get := func(res, vendor string) *resource.NodeResource {
		if r, ok := byRes[res]; ok {
			return r
		}
		r := &resource.NodeResource{Resource: res, Vendor: vendor}
		byRes[res] = r
		return r
	}
	for _, q := range n.Capacity {
		r := get(q.Resource, q.Vendor)
		r.Capacity, r.HasCapacity = q.Value, true
	}
	for _, q := range n.Allocatable {
		r := get(q.Resource, q.Vendor)
		r.Allocatable, r.HasAllocatable = q.Value, true
	}
	out := make([]resource.NodeResource, 0, len(byRes))
	for _, r := range byRes {
		out = append(out, *r)
	}
	resource.SortNodeResources(out)
	return out
}

// DRAVendor is the gpu_vendor of a DRA driver: the organisation label of
// its domain name ("gpu.nvidia.com" -> "nvidia").
func DRAVendor(driver string) string {
	labels := strings.Split(driver, ".")
	if len(labels) >= 2 {
		return labels[len(labels)-2]
	}
	return driver
}

// errNotSynced is returned until the informers have listed once.
var errNotSynced = errors.New("informers not synced yet")

// Read returns the specs the informers hold; it makes no API call. Until
// the informers first sync there are none (the kubelet/NVML fallback
// serves); after that the last state is returned even while the API server
// is unreachable, together with the error saying so.
func (w *Watcher) Read(context.Context) (*Specs, error) {
	snap := w.Snapshot()
	if !snap.Synced {
		return nil, errNotSynced
	}
	specs := snap.Specs()
	if !snap.Healthy {
		if snap.LastError != nil {
			return specs, fmt.Errorf("kubernetes API: %w", snap.LastError)
		}
		return specs, errors.New("kubernetes API: watch not open")
	}
	return specs, nil
}

// Errors returns the failed list and watch requests since start by reason,
// without building a Snapshot: scrapes read them every time. Requests for
// ResourceSlices and DeviceTaintRules count apart, as "dra": DRA is
// optional, and its failures do not make the source unhealthy.
func (w *Watcher) Errors() map[string]uint64 {
	out := map[string]uint64{
		"list":  w.pods.listErrors.Load() + w.nodes.listErrors.Load(),
		"watch": w.pods.watchErrors.Load() + w.nodes.watchErrors.Load(),
	}
	if w.sliceInformer != nil {
		out["dra"] = w.slices.listErrors.Load() + w.slices.watchErrors.Load() + w.rules.listErrors.Load() + w.rules.watchErrors.Load()
	}
	return out
}

// Unavailable is the spec source when the API is not in use (disabled, or
// no configuration found): no specs, so requests, limits, capacity and
// allocatable come from the kubelet and NVML, and Reason as the error, so
// up{source="kubernetes"} says 0.
type Unavailable struct{ Reason error }

// Read implements the collector's source shape.
func (u Unavailable) Read(context.Context) (*Specs, error) { return nil, u.Reason }

// Errors implements the collector's source shape; nothing is ever asked.
func (Unavailable) Errors() map[string]uint64 { return nil }
