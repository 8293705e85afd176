package podresources

import (
	"slices"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Convert reduces the kubelet's replies to GPU resources.
//
// The kubelet lists one ContainerDevices entry per device, and one per NUMA
// node of a device that reports several (containerDevicesFromResourceDeviceInstances
// in pkg/kubelet/cm of Kubernetes), in an order that changes between calls.
// So a container's entries of one resource are merged, its device IDs kept
// once each and sorted, and an allocatable ID listed twice is one device.
// Entries that cannot be attributed (empty pod, namespace or container
// names) are dropped and counted, and allocatable device IDs that are empty
// or malformed are dropped and counted, so one bad record never costs the
// rest of the reply.
func Convert(list *podresourcesv1.ListPodResourcesResponse, alloc *podresourcesv1.AllocatableResourcesResponse, m *resource.Matcher) *Snapshot {
	s := &Snapshot{Allocatable: map[string][]string{}, Dropped: map[string]int{}, DroppedAllocatable: map[string]int{}}
	type key struct{ ns, pod, ctr, res string }
	index := map[key]int{}
	for _, pod := range list.GetPodResources() {
		s.Pods++
		for _, ctr := range pod.GetContainers() {
			for _, dev := range ctr.GetDevices() {
				res := dev.GetResourceName()
				if _, ok := m.Vendor(res); !ok || len(dev.GetDeviceIds()) == 0 {
					continue
				}
				if pod.GetName() == "" || pod.GetNamespace() == "" || ctr.GetName() == "" {
					s.Dropped["empty_name"]++
					continue
				}
				k := key{pod.GetNamespace(), pod.GetName(), ctr.GetName(), res}
				i, ok := index[k]
				if !ok {
					i = len(s.Containers)
					index[k] = i
					s.Containers = append(s.Containers, ContainerDevices{Namespace: k.ns, Pod: k.pod, Container: k.ctr, Resource: res})
				}
				s.Containers[i].DeviceIDs = append(s.Containers[i].DeviceIDs, dev.GetDeviceIds()...)
			}
		}
	}
	for i := range s.Containers {
		s.Containers[i].DeviceIDs = sortedUnique(s.Containers[i].DeviceIDs)
	}
	// An allocatable ID that is empty or (for an NVIDIA resource) no
	// device ID at all would be counted as a device in capacity and
	// allocatable: it is dropped and counted instead.
	for _, dev := range alloc.GetDevices() {
		res := dev.GetResourceName()
		vendor, ok := m.Vendor(res)
		if !ok {
			continue
		}
		for _, id := range dev.GetDeviceIds() {
			if id == "" {
				s.DroppedAllocatable["invalid_device_id"]++
				continue
			}
			if vendor == "nvidia" {
				if _, err := ParseDeviceID(id); err != nil {
					s.DroppedAllocatable["invalid_device_id"]++
					continue
				}
			}
			s.Allocatable[res] = append(s.Allocatable[res], id)
		}
	}
	for res, ids := range s.Allocatable {
		s.Allocatable[res] = sortedUnique(ids)
	}
	resource.SortByKey(s.Containers, func(c *ContainerDevices) resource.Key {
		return resource.Key{Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Name: c.Resource}
	})
	return s
}

// sortedUnique sorts ids in place and drops repeats.
func sortedUnique(ids []string) []string {
	slices.Sort(ids)
	return slices.Compact(ids)
}

// ConvertClaims reduces the kubelet's List reply to the devices containers
// got through DRA claims of the given drivers. Like Convert it is pure: an
// entry without pod, namespace or container name is dropped and counted in
// dropped as "empty_name", one without pool or device name as
// "malformed_claim", and a device listed twice for a container (two claims
// sharing it) is kept once.
func ConvertClaims(list *podresourcesv1.ListPodResourcesResponse, drivers []string, dropped map[string]int) []ContainerClaim {
	if len(drivers) == 0 {
		return nil
	}
	want := make(map[string]bool, len(drivers))
	for _, d := range drivers {
		want[d] = true
	}
	var out []ContainerClaim
	seen := map[ContainerClaim]bool{}
	for _, pod := range list.GetPodResources() {
		for _, ctr := range pod.GetContainers() {
			for _, dr := range ctr.GetDynamicResources() {
				for _, cr := range dr.GetClaimResources() {
					if !want[cr.GetDriverName()] {
						continue
					}
					if pod.GetName() == "" || pod.GetNamespace() == "" || ctr.GetName() == "" {
						dropped["empty_name"]++
						continue
					}
					if cr.GetPoolName() == "" || cr.GetDeviceName() == "" {
						dropped["malformed_claim"]++
						continue
					}
					c := ContainerClaim{
						Namespace: pod.GetNamespace(), Pod: pod.GetName(), Container: ctr.GetName(),
						Driver: cr.GetDriverName(), Pool: cr.GetPoolName(), Device: cr.GetDeviceName(),
					}
					key := c // the claim name does not make another device
					if seen[key] {
						continue
					}
					seen[key] = true
					c.ClaimName = dr.GetClaimName()
					out = append(out, c)
				}
			}
		}
	}
	resource.SortByKey(out, func(c *ContainerClaim) resource.Key {
		return resource.Key{Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Name: claimKey(c)}
	})
	return out
}
