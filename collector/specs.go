package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
)

// KubeSnapshotter is what the collector needs of kube.Watcher.
type KubeSnapshotter interface {
	Snapshot() kube.Snapshot
	ErrorCounts() (list, watch uint64)
}

// KubeSpecs adapts a kube.Watcher (or nil, when the API is not in use) to
// SpecSource. Until the informers have synced once there are no specs and
// the kubelet/NVML fallback is used; after that the informers' last state is
// served even while the API server is unreachable.
type KubeSpecs struct {
	W KubeSnapshotter
}

// Specs implements SpecSource.
func (k KubeSpecs) Specs() (*Specs, bool) {
	if k.W == nil {
		return nil, false
	}
	snap := k.W.Snapshot()
	if !snap.Synced {
		return nil, false
	}
	return SpecsFromKube(snap), snap.Healthy
}

// Errors implements SpecSource.
func (k KubeSpecs) Errors() map[string]uint64 {
	if k.W == nil {
		return nil
	}
	list, watch := k.W.ErrorCounts()
	return map[string]uint64{"list": list, "watch": watch}
}

// SpecsFromKube converts the informers' view into the collector's plain data.
func SpecsFromKube(s kube.Snapshot) *Specs {
	out := &Specs{NodeFound: s.Node.Found, Lookup: s}
	out.Containers = make([]ContainerResource, 0, len(s.Containers))
	for _, c := range s.Containers {
		out.Containers = append(out.Containers, ContainerResource{
			Namespace: c.Namespace, Pod: c.Pod, Container: c.Container,
			Resource: c.Resource, Vendor: c.Vendor, Request: c.Request, Limit: c.Limit,
		})
	}
	byRes := map[string]*NodeResource{}
	var order []string
	get := func(res, vendor string) *NodeResource {
		if r, ok := byRes[res]; ok {
			return r
		}
		r := &NodeResource{Resource: res, Vendor: vendor}
		byRes[res] = r
		order = append(order, res)
		return r
	}
	for _, q := range s.Node.Capacity {
		r := get(q.Resource, q.Vendor)
		r.Capacity, r.HasCapacity = q.Value, true
	}
	for _, q := range s.Node.Allocatable {
		r := get(q.Resource, q.Vendor)
		r.Allocatable, r.HasAllocatable = q.Value, true
	}
	for _, res := range sortedStrings(order) {
		out.Node = append(out.Node, *byRes[res])
	}
	if s.DRAEnabled {
		out.DRA = s
		out.DRAUUIDs = map[string]bool{}
		for _, u := range s.DRADeviceUUIDs() {
			out.DRAUUIDs[u] = true
		}
		for _, d := range s.DRA {
			n := float64(d.Devices)
			out.DRANode = append(out.DRANode, NodeResource{
				Resource: d.Driver, Vendor: draVendor(d.Driver),
				Capacity: n, HasCapacity: true, Allocatable: n, HasAllocatable: true,
			})
		}
	}
	return out
}

// PodLookup resolves the pod UIDs and container IDs found in cgroups.
type PodLookup interface {
	PodByUID(uid string) (kube.PodRef, bool)
	ContainerByID(id string) (kube.ContainerRef, bool)
}
