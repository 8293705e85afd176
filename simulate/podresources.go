package simulate

import (
	"context"
	"fmt"
	"sort"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// deviceID turns a scenario device entry into the ID the device plugin
// would give the kubelet: MIG instances by their UUID, under their profile's
// resource (mixed strategy) or nvidia.com/gpu (single strategy) alike, and a
// replica of a time-sliced GPU or instance as "<uuid>::<n>".
func deviceID(d string) string {
	ref, _ := ParseDevice(d)
	id := UUID(ref.GPU)
	if ref.MIG >= 0 {
		id = MIGUUID(ref.GPU, ref.MIG)
	}
	if ref.Replica >= 0 {
		return fmt.Sprintf("%s::%d", id, ref.Replica)
	}
	return id
}

func (n *Node) buildPodResources() (*podresourcesv1.ListPodResourcesResponse, *podresourcesv1.AllocatableResourcesResponse) {
	list := &podresourcesv1.ListPodResourcesResponse{}
	replicated := map[int]bool{}
	migReplicas := map[[2]int]int{} // MIG instance -> replicas handed out
	for _, p := range n.scenario.Pods {
		pr := &podresourcesv1.PodResources{Namespace: p.Namespace, Name: p.Name}
		for _, c := range p.Containers {
			cr := &podresourcesv1.ContainerResources{Name: c.Name}
			if c.Claim != "" {
				cr.DynamicResources = []*podresourcesv1.DynamicResource{n.claimResources(p.Namespace, c)}
			} else if len(c.Devices) > 0 {
				ids := make([]string, len(c.Devices))
				for k, d := range c.Devices {
					ids[k] = deviceID(d)
					switch ref, _ := ParseDevice(d); {
					case ref.Replica >= 0 && ref.MIG >= 0:
						k := [2]int{ref.GPU, ref.MIG}
						migReplicas[k] = max(migReplicas[k], ref.Replica+1)
					case ref.Replica >= 0:
						replicated[ref.GPU] = true
					}
				}
				cr.Devices = []*podresourcesv1.ContainerDevices{{ResourceName: c.Resource, DeviceIds: ids}}
			}
			pr.Containers = append(pr.Containers, cr)
		}
		list.PodResources = append(list.PodResources, pr)
	}
	alloc := &podresourcesv1.AllocatableResourcesResponse{}
	if n.scenario.Allocatable != nil {
		names := make([]string, 0, len(n.scenario.Allocatable))
		for res := range n.scenario.Allocatable {
			names = append(names, res)
		}
		sort.Strings(names)
		for _, res := range names {
			ids := make([]string, 0, len(n.scenario.Allocatable[res]))
			for _, d := range n.scenario.Allocatable[res] {
				ids = append(ids, deviceID(d))
			}
			alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids})
		}
		return list, alloc
	}
	// Without an explicit list, every GPU neither shared nor MIG-enabled is
	// offered whole, and MIG instances under their profile's resource (the
	// device plugin's mixed strategy), time-sliced ones as the replicas the
	// pods hold.
	var ids []string
	migIDs := map[string][]string{}
	dra := map[string]bool{} // published by the DRA driver, not the device plugin
	if n.scenario.DRA != nil {
		for _, d := range n.scenario.DRA.Devices {
			dra[d] = true
		}
	}
	for i := 0; i < n.scenario.GPUs; i++ {
		if profiles, ok := n.scenario.MIG[i]; ok {
			for j, p := range profiles {
				res := "nvidia.com/mig-" + p
				switch n := migReplicas[[2]int{i, j}]; {
				case dra[fmt.Sprintf("%d/%d", i, j)]:
				case n > 0: // time-sliced: the plugin offers each replica
					for r := range n {
						migIDs[res] = append(migIDs[res], fmt.Sprintf("%s::%d", MIGUUID(i, j), r))
					}
				default:
					migIDs[res] = append(migIDs[res], MIGUUID(i, j))
				}
			}
			continue
		}
		if !replicated[i] && !dra[fmt.Sprint(i)] {
			ids = append(ids, UUID(i))
		}
	}
	if len(ids) > 0 {
		alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: "nvidia.com/gpu", DeviceIds: ids})
	}
	names := make([]string, 0, len(migIDs))
	for res := range migIDs {
		names = append(names, res)
	}
	sort.Strings(names)
	for _, res := range names {
		alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: migIDs[res]})
	}
	return list, alloc
}

// DRADeviceName is the name the scenario's DRA driver gives a device in
// its ResourceSlice: "gpu-3" for GPU 3, "gpu-2-mig-0" for instance 0 of GPU 2.
func DRADeviceName(d string) string {
	ref, _ := ParseDevice(d)
	if ref.MIG >= 0 {
		return fmt.Sprintf("gpu-%d-mig-%d", ref.GPU, ref.MIG)
	}
	return fmt.Sprintf("gpu-%d", ref.GPU)
}

// deviceUUID is the NVML UUID of a whole GPU or MIG instance entry.
func deviceUUID(d string) string {
	ref, _ := ParseDevice(d)
	if ref.MIG >= 0 {
		return MIGUUID(ref.GPU, ref.MIG)
	}
	return UUID(ref.GPU)
}

// claimResources is what the kubelet reports of a container's claim: the
// driver, this node's pool and each allocated device with its CDI device.
func (n *Node) claimResources(namespace string, c Container) *podresourcesv1.DynamicResource {
	dr := &podresourcesv1.DynamicResource{ClaimName: c.Claim, ClaimNamespace: namespace}
	for _, d := range c.Devices {
		dr.ClaimResources = append(dr.ClaimResources, &podresourcesv1.ClaimResource{
			DriverName: n.scenario.DRA.Driver,
			PoolName:   n.Name,
			DeviceName: DRADeviceName(d),
			CdiDevices: []*podresourcesv1.CDIDevice{{Name: "k8s." + n.scenario.DRA.Driver + "/gpu=" + deviceUUID(d)}},
		})
	}
	return dr
}

// List implements fakekubelet.Source.
func (n *Node) List(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	return n.list, nil
}

// Allocatable implements fakekubelet.Source.
func (n *Node) Allocatable(context.Context) (*podresourcesv1.AllocatableResourcesResponse, error) {
	return n.alloc, nil
}
