package collector

import (
	"strconv"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// vendor is the gpu_vendor of every NVML device.
const vendor = "nvidia"

// The shared labels of each level, added in one place so that joins
// between families never drift.
var (
	deviceLabels   = []string{"node", "gpu_id", "gpu_model", "gpu_vendor"}
	usageLabels    = []string{"node", "namespace", "pod", "container", "gpu_id", "gpu_model", "gpu_vendor"}
	resourceLabels = []string{"node", "namespace", "pod", "container", "resource", "gpu_vendor"}
	nodeResLabels  = []string{"node", "resource", "gpu_vendor"}
	podResLabels   = []string{"node", "namespace", "pod", "resource", "gpu_vendor"}
)

func deviceValues(node string) func([]string, *nvml.Reading) []string {
	return func(b []string, d *nvml.Reading) []string { return append(b, node, d.UUID, d.Name, vendor) }
}

func usageValues(node string) func([]string, *Usage) []string {
	return func(b []string, u *Usage) []string {
		return append(b, node, u.Namespace, u.Pod, u.Container, u.Device.UUID, u.Device.Name, vendor)
	}
}

func requestValues(node string) func([]string, *ContainerResource) []string {
	return func(b []string, r *ContainerResource) []string {
		return append(b, node, r.Namespace, r.Pod, r.Container, r.Resource, r.Vendor)
	}
}

func podResValues(node string) func([]string, *PodResource) []string {
	return func(b []string, r *PodResource) []string {
		return append(b, node, r.Namespace, r.Pod, r.Resource, r.Vendor)
	}
}

func nodeResValues(node string) func([]string, *NodeResource) []string {
	return func(b []string, r *NodeResource) []string { return append(b, node, r.Resource, r.Vendor) }
}

// deviceFamilies are read for every device NVML reports, GPU or MIG
// instance, allocated or not.
var deviceFamilies = []Family[nvml.Reading]{
	{
		Name:   Prefix + "_device_info",
		Help:   "One series per device NVML reports, GPU or MIG instance: the MIG instance's parent GPU, profile and GPU/compute instance IDs (empty on whole GPUs) and the PCI address, for grouping by gpu_id.",
		Labels: []string{"parent_gpu_id", "mig_profile", "gpu_instance_id", "compute_instance_id", "pci_bus_id"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			emit(1, d.ParentUUID, d.Profile, instanceID(d.GPUInstance), instanceID(d.ComputeInstance), d.PCIBusID)
		},
	},
	{
		Name:  "nodeGpuDutyCycle",
		Help:  "Percentage of time over the duty-cycle window during which the device was busy (0-100), whether allocated or not.",
		Value: func(d *nvml.Reading) (float64, bool) { return d.DutyCycle, d.HasDutyCycle },
	},
	{
		Name:  "nodeGpumemoryTotalBytes",
		Help:  "GPU memory in bytes of the device.",
		Value: func(d *nvml.Reading) (float64, bool) { return float64(d.MemoryTotal), d.MemoryTotal > 0 },
	},
	{
		Name:  "nodeGpumemoryUsedBytes",
		Help:  "GPU memory in bytes in use on the device.",
		Value: func(d *nvml.Reading) (float64, bool) { return float64(d.MemoryUsed), d.HasMemory },
	},
}

// usageFamilies are read for every container holding a device.
var usageFamilies = []Family[Usage]{
	{
		Name:  "containerGpuDutyCycle",
		Help:  "Percentage of time over the duty-cycle window during which the GPU (or MIG instance) held by the container was busy (0-100).",
		Value: func(u *Usage) (float64, bool) { return u.DutyCycle, u.HasDutyCycle },
	},
	{
		Name:  "containerGpumemoryTotalBytes",
		Help:  "GPU memory in bytes available to the container on the device (the GPU's, or the MIG instance's).",
		Value: func(u *Usage) (float64, bool) { return float64(u.Device.MemoryTotal), u.Device.MemoryTotal > 0 },
	},
	{
		Name:  "containerGpumemoryUsedBytes",
		Help:  "GPU memory in bytes in use on the device (or MIG instance) held by the container.",
		Value: func(u *Usage) (float64, bool) { return float64(u.MemoryUsed), u.HasMemory },
	},
}

// attributionFamilies are read for every device some container holds.
var attributionFamilies = []Family[Attribution]{{
	Name:   Prefix + "_attribution_info",
	Help:   "How the container numbers of a device held by containers are obtained: mode exclusive, per_process, per_process_memory (memory per process, duty cycle the device's; reason says why) or device (reason says why per-process data could not be used).",
	Labels: []string{"mode", "reason"},
	Each:   func(a *Attribution, emit func(float64, ...string)) { emit(1, a.Mode, a.Reason) },
}}

// unattributedFamilies are read for GPU use by processes of no holder.
var unattributedFamilies = []Family[Unattributed]{
	{
		Name:   Prefix + "_unattributed_duty_cycle",
		Help:   "SM utilization (0-100) on the device, averaged over the duty-cycle window, of processes belonging to no container that holds it; namespace and pod name their pod when their cgroup names one.",
		Labels: []string{"namespace", "pod"},
		Each: func(u *Unattributed, emit func(float64, ...string)) {
			if u.HasDutyCycle {
				emit(u.DutyCycle, u.Namespace, u.Pod)
			}
		},
	},
	{
		Name:   Prefix + "_unattributed_memory_used_bytes",
		Help:   "GPU memory in bytes on the device held by processes belonging to no container that holds it.",
		Labels: []string{"namespace", "pod"},
		Each:   func(u *Unattributed, emit func(float64, ...string)) { emit(float64(u.MemoryUsed), u.Namespace, u.Pod) },
	},
}

// requestFamilies are read for every container's GPU resource.
var requestFamilies = []Family[ContainerResource]{
	{
		Name:  "containerGpuRequests",
		Help:  "GPUs requested by the container, per GPU resource.",
		Value: func(r *ContainerResource) (float64, bool) { return r.Request, true },
	},
	{
		Name:  "containerGpuLimits",
		Help:  "GPUs limited for the container, per GPU resource.",
		Value: func(r *ContainerResource) (float64, bool) { return r.Limit, true },
	},
}

// podRequestFamilies are read for every pod's GPU resource. Summing
// containerGpuRequests counts a GPU an init container hands over to the
// main container twice; this is what sums correctly.
var podRequestFamilies = []Family[PodResource]{
	{
		Name:  Prefix + "_pod_requests",
		Help:  "GPUs the pod holds as the scheduler counts them, per GPU resource: max(largest init container with the sidecars started before it, sum of containers and sidecars).",
		Value: func(r *PodResource) (float64, bool) { return r.Request, true },
	},
}

// nodeResourceFamilies are read for every GPU resource of the node.
var nodeResourceFamilies = []Family[NodeResource]{
	{
		Name:  "nodeGpuCapacity",
		Help:  "GPUs on the node, per GPU resource.",
		Value: func(r *NodeResource) (float64, bool) { return r.Capacity, r.HasCapacity },
	},
	{
		Name:  "nodeGpuAllocatable",
		Help:  "GPUs Kubernetes can hand out on the node, per GPU resource.",
		Value: func(r *NodeResource) (float64, bool) { return r.Allocatable, r.HasAllocatable },
	},
}

// instanceID is a MIG instance ID as a label value: empty on whole GPUs.
func instanceID(id int) string {
	if id < 0 {
		return ""
	}
	return strconv.Itoa(id)
}
