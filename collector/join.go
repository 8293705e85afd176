package collector

import (
	"sort"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Inputs is everything one scrape knows, as plain data.
type Inputs struct {
	// Devices are NVML's readings; nil when NVML is down.
	Devices []nvml.Reading
	// NVMLUp is whether NVML answered; without it device counts are unknown.
	NVMLUp bool
	// Kubelet is the pod-resources view; nil when the kubelet is unreachable.
	Kubelet *podresources.Snapshot
	// Specs is the Kubernetes API view; nil when the API is not used or has
	// never synced.
	Specs *Specs
	// Matcher selects GPU resources and their vendor.
	Matcher *resource.Matcher
	// Owners maps the PIDs of the devices' processes to their cgroup owner.
	Owners map[uint32]OwnerResult
	// NoAttribution, when set, is why per-process attribution is off for
	// every device ("disabled", "no_procfs", "no_kubernetes_api").
	NoAttribution string
}

// Usage is one container's use of one device (a GPU or a MIG instance).
// Replicas of one device held by the same container collapse into one Usage.
// Its readings are the device's, or the container's own processes' when the
// device is shared and per-process attribution is possible.
type Usage struct {
	Namespace, Pod, Container string
	Device                    *nvml.Reading
	DutyCycle                 float64
	HasDutyCycle              bool
	MemoryUsed                uint64
	HasMemory                 bool
	// Share is the container's part of the device's per-process SM time
	// (1 when it holds the device alone): device-wide GPM values are
	// scaled by it, so sharers add up to the device and none gets a copy.
	Share    float64
	HasShare bool
}

// Attribution says how the container numbers of one device were obtained.
type Attribution struct {
	Device *nvml.Reading
	// Mode is "exclusive" (one holder: device-wide numbers are its own),
	// "per_process" (shared; each holder's own processes),
	// "per_process_memory" (shared; each holder's own processes' memory,
	// the device's duty cycle: Reason says why utilization is missing) or
	// "device" (shared; device-wide numbers for every holder, Reason says
	// why).
	Mode, Reason string
}

// Unattributed is GPU use on a device by processes that belong to no
// container holding it: a pod that set NVIDIA_VISIBLE_DEVICES=all without
// requesting a GPU (Namespace/Pod name it), or a host process (both empty).
type Unattributed struct {
	Device         *nvml.Reading
	Namespace, Pod string
	// DutyCycle is valid when HasDutyCycle: MIG instances list processes
	// without their utilization.
	DutyCycle    float64
	HasDutyCycle bool
	MemoryUsed   uint64
}

// View is the joined, sorted result a scrape turns into metrics.
type View struct {
	Devices      []nvml.Reading
	Usage        []Usage
	Attribution  []Attribution
	Unattributed []Unattributed
	Requests     []ContainerResource
	PodRequests  []PodResource
	Workloads    []PodWorkload
	Node         []NodeResource
	Unmatched    []string
	// Health, ContainerHealth and ContainerXids are filled by the
	// collector when its health and events switches are on.
	Health          []DeviceHealth
	ContainerHealth []ContainerHealth
	ContainerXids   []ContainerXid
	// Accounts and DeviceAccounts are the chargeback counters, filled
	// when the chargeback switch is on.
	Accounts       []ContainerAccount
	DeviceAccounts []DeviceAccount
	// KubeletHealth is the kubelet's health of each device a container
	// holds, from the pod statuses; kept only with the health switch.
	KubeletHealth []KubeletDeviceHealth
	// DeviceTaints are the taints on the node's DRA GPU devices.
	DeviceTaints []DeviceTaint
}

// deviceIndex resolves parsed kubelet device IDs to NVML devices.
type deviceIndex struct {
	byUUID  map[string]*nvml.Reading
	byMinor map[int]*nvml.Reading
	// MIG instances by parent and instance IDs, for legacy and GKE IDs.
	byParentGI map[string][]*nvml.Reading
	byMinorGI  map[[2]int][]*nvml.Reading
}

func newDeviceIndex(devs []nvml.Reading) *deviceIndex {
	ix := &deviceIndex{
		byUUID:     make(map[string]*nvml.Reading, len(devs)),
		byMinor:    map[int]*nvml.Reading{},
		byParentGI: map[string][]*nvml.Reading{},
		byMinorGI:  map[[2]int][]*nvml.Reading{},
	}
	for i := range devs {
		d := &devs[i]
		ix.byUUID[d.UUID] = d
		if d.IsMIG() {
			ix.byParentGI[d.ParentUUID] = append(ix.byParentGI[d.ParentUUID], d)
			k := [2]int{d.Minor, d.GPUInstance}
			ix.byMinorGI[k] = append(ix.byMinorGI[k], d)
		} else if d.Minor >= 0 {
			ix.byMinor[d.Minor] = d
		}
	}
	return ix
}

// resolve finds the device a kubelet device ID names, or nil.
func (ix *deviceIndex) resolve(id string) *nvml.Reading {
	ref, err := podresources.ParseDeviceID(id)
	if err != nil {
		return nil
	}
	switch {
	case ref.UUID != "":
		return ix.byUUID[ref.UUID]
	case ref.ParentUUID != "":
		for _, d := range ix.byParentGI[ref.ParentUUID] {
			if d.GPUInstance == ref.GPUInstance && d.ComputeInstance == ref.ComputeInstance {
				return d
			}
		}
	case ref.GPUInstance >= 0:
		if ds := ix.byMinorGI[[2]int{ref.Minor, ref.GPUInstance}]; len(ds) > 0 {
			return ds[0]
		}
	default:
		return ix.byMinor[ref.Minor]
	}
	return nil
}

// Join turns the sources' raw data into the series of one scrape. It is a
// pure function: the table tests drive it with literal inputs.
func Join(in Inputs) View {
	v := View{Devices: in.Devices}
	ix := newDeviceIndex(in.Devices)

	if in.Kubelet != nil {
		type useKey struct{ ns, pod, ctr, uuid string }
		seen := map[useKey]bool{}
		unmatched := map[string]bool{}
		// hold records that a container holds device d, named id by its
		// source; a nil d is an ID that names no NVML device.
		hold := func(ns, pod, ctr string, d *nvml.Reading, id string) {
			if d == nil {
				if in.NVMLUp && !unmatched[id] {
					unmatched[id] = true
					v.Unmatched = append(v.Unmatched, id)
				}
				return
			}
			k := useKey{ns, pod, ctr, d.UUID}
			if seen[k] {
				return // another replica, claim or plugin ID of a device it already holds
			}
			seen[k] = true
			v.Usage = append(v.Usage, Usage{
				Namespace: ns, Pod: pod, Container: ctr, Device: d,
				DutyCycle: d.DutyCycle, HasDutyCycle: d.HasDutyCycle, MemoryUsed: d.MemoryUsed, HasMemory: d.HasMemory,
			})
		}
		for _, c := range in.Kubelet.Containers {
			for _, id := range c.DeviceIDs {
				hold(c.Namespace, c.Pod, c.Container, ix.resolve(id), id)
			}
		}
		if in.Specs != nil && in.Specs.DRA != nil {
			for _, c := range in.Kubelet.Claims {
				var d *nvml.Reading
				if uuid, ok := in.Specs.DRA.DRADeviceUUID(c.Driver, c.Pool, c.Device); ok {
					d = ix.byUUID[uuid]
				}
				hold(c.Namespace, c.Pod, c.Container, d, claimID(c))
			}
		}
		sort.Strings(v.Unmatched)
		resource.SortByKey(v.Usage, func(u *Usage) resource.Key {
			return resource.Key{Namespace: u.Namespace, Pod: u.Pod, Container: u.Container, Name: u.Device.UUID}
		})
	}
	attribute(&v, in)

	switch {
	case in.Specs != nil && in.Kubelet != nil:
		v.Requests = mergeRequests(in.Specs.Containers, kubeletRequests(in.Kubelet, in.Matcher))
	case in.Specs != nil:
		v.Requests = in.Specs.Containers
	case in.Kubelet != nil:
		v.Requests = kubeletRequests(in.Kubelet, in.Matcher)
	}
	if in.Kubelet != nil && len(in.Kubelet.Claims) > 0 {
		v.Requests = append(append([]ContainerResource(nil), v.Requests...), draRequests(in.Kubelet.Claims)...)
		resource.SortContainerResources(v.Requests)
	}

	var specPods []PodResource
	if in.Specs != nil {
		specPods = in.Specs.Pods
	}
	v.PodRequests = podRequests(specPods, v.Requests)
	v.Workloads = podWorkloads(in.Specs, v.PodRequests)
	v.KubeletHealth = kubeletHealth(in, ix)
	v.DeviceTaints = draTaints(in, ix)

	if in.Specs != nil && in.Specs.NodeFound {
		v.Node = in.Specs.Node
	} else {
		v.Node = fallbackNode(in, ix)
	}
	if in.Specs != nil && len(in.Specs.DRANode) > 0 {
		v.Node = append(append([]NodeResource(nil), v.Node...), in.Specs.DRANode...)
		resource.SortNodeResources(v.Node)
	}
	return v
}

// podRequests is the effective request of every pod per resource: the
// specs' where they know the pod and resource (init containers counted as
// the scheduler does), else the sum of its containers' rows (pods only the
// kubelet knows, whose devices it lists for the running containers; DRA
// claims).
func podRequests(specs []PodResource, rows []ContainerResource) []PodResource {
	type key struct{ ns, pod, res string }
	known := make(map[key]bool, len(specs))
	for _, p := range specs {
		known[key{p.Namespace, p.Pod, p.Resource}] = true
	}
	out := specs // sorted by kube; copied only when a pod is added
	at := map[key]int{}
	for _, r := range rows {
		k := key{r.Namespace, r.Pod, r.Resource}
		if known[k] {
			continue
		}
		i, ok := at[k]
		if !ok {
			if len(at) == 0 {
				out = append([]PodResource(nil), specs...)
			}
			i = len(out)
			at[k] = i
			out = append(out, PodResource{Namespace: r.Namespace, Pod: r.Pod, Resource: r.Resource, Vendor: r.Vendor})
		}
		out[i].Request += r.Request
	}
	if len(at) > 0 {
		resource.SortPodResources(out)
	}
	return out
}

// mergeRequests takes the pod specs' requests and limits, and adds the
// kubelet's counts for pods the informer has not seen yet (just admitted, or
// the API server unreachable since before they were created), so a container
// holding GPUs is never without a request series.
func mergeRequests(specs, kubelet []ContainerResource) []ContainerResource {
	known := make(map[[2]string]bool, len(specs))
	for _, c := range specs {
		known[[2]string{c.Namespace, c.Pod}] = true
	}
	out := specs
	added := false
	for _, c := range kubelet {
		if !known[[2]string{c.Namespace, c.Pod}] {
			if !added {
				out = append([]ContainerResource(nil), specs...)
				added = true
			}
			out = append(out, c)
		}
	}
	if added {
		resource.SortContainerResources(out)
	}
	return out
}

// kubeletRequests counts the device IDs the kubelet allocated: what a
// container was given is what it asked for, since extended resources admit
// no overcommit.
func kubeletRequests(s *podresources.Snapshot, m *resource.Matcher) []ContainerResource {
	out := make([]ContainerResource, 0, len(s.Containers))
	for _, c := range s.Containers {
		vendor, _ := m.Vendor(c.Resource)
		n := float64(len(c.DeviceIDs))
		out = append(out, ContainerResource{
			Namespace: c.Namespace, Pod: c.Pod, Container: c.Container,
			Resource: c.Resource, Vendor: vendor, Request: n, Limit: n,
		})
	}
	return out
}

// fallbackNode derives capacity and allocatable without the Kubernetes API.
// Allocatable is what GetAllocatableResources lists per resource. Capacity is
// the allocatable devices plus every NVML device the kubelet does not offer
// under any resource (an unhealthy GPU drops out of allocatable but not out of
// NVML); such devices count under nvidia.com/gpu, or their MIG profile's
// resource. Without NVML, capacity is unknown and absent.
func fallbackNode(in Inputs, ix *deviceIndex) []NodeResource {
	byRes := map[string]*NodeResource{}
	get := func(res string) *NodeResource {
		if r, ok := byRes[res]; ok {
			return r
		}
		vendor, ok := in.Matcher.Vendor(res)
		if !ok {
			vendor = "nvidia"
		}
		r := &NodeResource{Resource: res, Vendor: vendor}
		byRes[res] = r
		return r
	}
	offered := map[string]bool{}
	if in.Kubelet != nil {
		for res, ids := range in.Kubelet.Allocatable {
			r := get(res)
			// With NVML up, an NVIDIA ID counts only when it names a device
			// of this node: the kubelet's list is then no longer trusted to
			// hold nothing else (the client already dropped empty,
			// malformed and repeated IDs and counted them as errors).
			checked := in.NVMLUp && r.Vendor == "nvidia"
			n := 0
			for _, id := range ids {
				d := ix.resolve(id)
				if d == nil {
					if !checked {
						n++
					}
					continue
				}
				n++
				offered[d.UUID] = true
				if d.IsMIG() {
					offered[d.ParentUUID] = true
				}
			}
			r.Allocatable, r.HasAllocatable = float64(n), true
			if in.NVMLUp {
				r.Capacity, r.HasCapacity = float64(n), true
			}
		}
	}
	if in.NVMLUp {
		migParents := map[string]bool{}
		for _, d := range in.Devices {
			if d.IsMIG() {
				migParents[d.ParentUUID] = true
			}
		}
		var dra map[string]bool
		if in.Specs != nil {
			dra = in.Specs.DRAUUIDs
		}
		for _, d := range in.Devices {
			if offered[d.UUID] || (d.MIGEnabled && migParents[d.UUID]) || dra[d.UUID] {
				continue // counted through the kubelet, its instances or its DRA driver
			}
			res := "nvidia.com/gpu"
			if d.IsMIG() && d.Profile != "" {
				if _, ok := in.Matcher.Vendor("nvidia.com/mig-" + d.Profile); ok {
					res = "nvidia.com/mig-" + d.Profile
				}
			}
			r := get(res)
			r.Capacity++
			r.HasCapacity = true
		}
	}
	out := make([]NodeResource, 0, len(byRes))
	for _, r := range byRes {
		out = append(out, *r)
	}
	resource.SortNodeResources(out)
	return out
}
