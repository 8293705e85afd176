package fakekubelet

import (
	"math/rand/v2"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// The real kubelet builds every ContainerDevices it returns, in List, Get
// and GetAllocatableResources alike, from one device at a time
// (containerDevicesFromResourceDeviceInstances in pkg/kubelet/cm of
// Kubernetes): one entry per device ID, and one per NUMA node of a device
// that reports several, each with its topology; and it walks Go maps, so
// the order of pods, containers and entries changes from call to call. A
// Source says which container holds which devices in whatever grouping is
// convenient; the Server answers in the kubelet's shape, so that no client
// can pass against it by reading a shape the kubelet never sends.

// perDevice splits each entry with IDs into one entry per ID and NUMA node
// of its topology (one entry without topology where it has none), as the
// kubelet does,
// and shuffles the entries with r.
func perDevice(devs []*podresourcesv1.ContainerDevices, r *rand.Rand) []*podresourcesv1.ContainerDevices {
	out := make([]*podresourcesv1.ContainerDevices, 0, len(devs))
	for _, d := range devs {
		if d == nil || len(d.DeviceIds) == 0 {
			out = append(out, d)
			continue
		}
		for _, id := range d.DeviceIds {
			if d.Topology == nil {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: d.ResourceName, DeviceIds: []string{id}})
				continue
			}
			for _, node := range d.Topology.Nodes {
				out = append(out, &podresourcesv1.ContainerDevices{
					ResourceName: d.ResourceName, DeviceIds: []string{id},
					Topology: &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: node.GetID()}}},
				})
			}
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// kubeletList returns list in the kubelet's shape; list itself is left as
// the Source made it.
func kubeletList(list *podresourcesv1.ListPodResourcesResponse, r *rand.Rand) *podresourcesv1.ListPodResourcesResponse {
	if list == nil {
		return nil
	}
	out := &podresourcesv1.ListPodResourcesResponse{PodResources: make([]*podresourcesv1.PodResources, len(list.PodResources))}
	for i, p := range list.PodResources {
		if p == nil {
			out.PodResources[i] = p
			continue
		}
		pod := &podresourcesv1.PodResources{Name: p.Name, Namespace: p.Namespace, Containers: make([]*podresourcesv1.ContainerResources, len(p.Containers))}
		for j, c := range p.Containers {
			if c == nil {
				pod.Containers[j] = c
				continue
			}
			pod.Containers[j] = &podresourcesv1.ContainerResources{
				Name: c.Name, Devices: perDevice(c.Devices, r), CpuIds: c.CpuIds, Memory: c.Memory, DynamicResources: c.DynamicResources,
			}
		}
		r.Shuffle(len(pod.Containers), func(a, b int) { pod.Containers[a], pod.Containers[b] = pod.Containers[b], pod.Containers[a] })
		out.PodResources[i] = pod
	}
	r.Shuffle(len(out.PodResources), func(a, b int) {
		out.PodResources[a], out.PodResources[b] = out.PodResources[b], out.PodResources[a]
	})
	return out
}

// kubeletAllocatable returns alloc in the kubelet's shape.
func kubeletAllocatable(alloc *podresourcesv1.AllocatableResourcesResponse, r *rand.Rand) *podresourcesv1.AllocatableResourcesResponse {
	if alloc == nil {
		return nil
	}
	return &podresourcesv1.AllocatableResourcesResponse{
		Devices: perDevice(alloc.Devices, r), CpuIds: alloc.CpuIds, Memory: alloc.Memory,
	}
}
