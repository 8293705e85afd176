package dashboards

import "fmt"

// Cluster is the fleet view: capacity against allocation, utilisation by
// namespace, allocated-but-idle GPUs, memory pressure and unallocatable GPUs.
func Cluster() *Dashboard {
	const (
		nodeSel = `cluster_name=~"$cluster", node=~"$node"`
		ctrSel  = `cluster_name=~"$cluster", node=~"$node", namespace=~"$namespace"`
		// Devices are keyed by these labels; several containers can share
		// one (time-slicing), so device-level figures take max by them first.
		dev = "cluster_name, node, gpu_id"
		// One row of the idle table.
		holder = "cluster_name, node, namespace, pod, container, gpu_id"
	)
	b := newBoard("kube-gpu-exporter-cluster", "Kubernetes / GPU / Cluster",
		"GPU capacity, allocation and utilisation across the cluster, from kube-gpu-exporter.",
		[]string{"kube-gpu-exporter", "gpu", "kubernetes"},
		clusterVariable(),
		queryVariable("node", "Node", "Nodes that report GPUs.",
			`{__name__=~"nodeGpuDutyCycle|nodeGpuCapacity", cluster_name=~"$cluster"}`, "node", true, true),
		queryVariable("namespace", "Namespace", "Namespaces with containers that request or hold GPUs.",
			`{__name__=~"containerGpuRequests|containerGpuDutyCycle", cluster_name=~"$cluster", node=~"$node"}`, "namespace", true, true),
	)

	// Per node first, then summed: during a rolling update two exporters
	// report the same node for a moment (as in the recording rules).
	perNode := func(metric string) string {
		return fmt.Sprintf("max by (cluster_name, node, resource) (%s)", m(metric, nodeSel))
	}
	capacity := "sum by (resource) (" + perNode("nodeGpuCapacity") + ")"
	allocatable := "sum by (resource) (" + perNode("nodeGpuAllocatable") + ")"
	// Pods, not containers: an init container's GPU passes to the main
	// container and must not count twice.
	requested := "sum by (resource) (" + m("kube_gpu_pod_requests", ctrSel) + ")"

	b.row("Capacity and allocation")
	b.add(5, 5, stat("Capacity", "GPUs the nodes report in their capacity, per extended resource.", unitCount, neutralThresholds(),
		instant(capacity, "{{resource}}")))
	b.add(5, 5, stat("Allocatable", "GPUs the kubelets can hand to pods, per extended resource.", unitCount, neutralThresholds(),
		instant(allocatable, "{{resource}}")))
	b.add(5, 5, stat("Requested", "GPUs requested by the pods of the selected namespaces.", unitCount, neutralThresholds(),
		instant(requested, "{{resource}}")))
	b.add(9, 5, gauge("Requested share of allocatable",
		fmt.Sprintf("Requests of all namespaces over allocatable GPUs. Alert GPUClusterAllocationNearlyExhausted fires above %g %%.", AllocationNearlyExhausted),
		allocationThresholds(),
		instant("100 * sum by (resource) ("+m("kube_gpu_pod_requests", nodeSel)+")\n  / "+allocatable, "{{resource}}")))
	b.add(12, 8, timeseries("Capacity, allocatable and requested", "Per extended resource over time.", unitCount, neutralThresholds(),
		series(capacity, "capacity {{resource}}"),
		series(allocatable, "allocatable {{resource}}"),
		series(requested, "requested {{resource}}")))
	b.add(12, 8, table("GPUs per node",
		"Capacity, allocatable and requested GPUs of every node and resource. Unallocatable = capacity - allocatable: devices the device plugin reports unhealthy or that are reserved.",
		[]column{
			{Name: "Capacity", Unit: unitCount},
			{Name: "Allocatable", Unit: unitCount},
			{Name: "Requested", Unit: unitCount},
			{Name: "Unallocatable", Unit: unitCount, Th: countThresholds("red"), Color: true},
		}, nil, "Unallocatable",
		tabular(perNode("nodeGpuCapacity")),
		tabular(perNode("nodeGpuAllocatable")),
		tabular("sum by (cluster_name, node, resource) ("+m("kube_gpu_pod_requests", nodeSel)+")"),
		tabular(perNode("nodeGpuCapacity")+"\n- "+perNode("nodeGpuAllocatable"))))
	b.add(24, 6, table("Nodes with unallocatable GPUs",
		"Capacity minus allocatable per node and resource, largest first. Anything above 0 is a GPU Kubernetes cannot schedule (alert GPUUnallocatable).",
		[]column{{Name: "Unallocatable", Unit: unitCount, Th: countThresholds("red"), Color: true}},
		nil, "Unallocatable",
		tabular("sort_desc(\n  "+perNode("nodeGpuCapacity")+"\n  - "+perNode("nodeGpuAllocatable")+"\n)")))

	allocatedDevices := fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpuDutyCycle", ctrSel))
	b.row("Utilisation")
	b.add(6, 5, stat("Duty cycle, all GPUs", "Mean duty cycle of every GPU of the selected nodes, allocated or not.", unitPercent, dutyThresholds(),
		instant("avg("+m("nodeGpuDutyCycle", nodeSel)+")", "all GPUs")))
	b.add(6, 5, stat("Duty cycle, allocated GPUs", "Mean duty cycle of the GPUs held by containers of the selected namespaces.", unitPercent, dutyThresholds(),
		instant("avg("+allocatedDevices+")", "allocated GPUs")))
	b.add(6, 5, stat("Allocated GPUs idle now", fmt.Sprintf("GPUs held by a container whose duty cycle is below %g %%.", IdleDutyCycle), unitCount, countThresholds("orange"),
		instant(fmt.Sprintf("count(%s < %g) or vector(0)", allocatedDevices, IdleDutyCycle), "idle")))
	b.add(6, 5, stat("Unallocated GPUs", "GPUs of the selected nodes that no container holds.", unitCount, neutralThresholds(),
		instant(fmt.Sprintf("count(%s unless on (%s) %s) or vector(0)", m("nodeGpuDutyCycle", nodeSel), dev, m("containerGpuDutyCycle", nodeSel)), "unallocated")))
	b.add(12, 9, timeseries("Duty cycle", "Mean duty cycle of all GPUs and of the allocated ones.", unitPercent, dutyThresholds(),
		series("avg("+m("nodeGpuDutyCycle", nodeSel)+")", "all GPUs"),
		series("avg("+allocatedDevices+")", "allocated GPUs")))
	b.add(12, 9, timeseries("Duty cycle by namespace", "Mean duty cycle of the GPUs each namespace holds.", unitPercent, dutyThresholds(),
		series("avg by (namespace) ("+m("containerGpuDutyCycle", ctrSel)+")", "{{namespace}}")))
	b.add(12, 8, bargauge("GPU requests by namespace", "GPUs requested by the pods of each namespace, per resource.", unitCount, neutralThresholds(),
		instant("sort_desc(sum by (namespace, resource) ("+m("kube_gpu_pod_requests", ctrSel)+"))", "{{namespace}} {{resource}}")))
	b.add(12, 8, bargauge("Duty cycle by namespace, now", "Mean duty cycle of the GPUs each namespace holds, lowest first.", unitPercent, dutyThresholds(),
		instant("sort(avg by (namespace) ("+m("containerGpuDutyCycle", ctrSel)+"))", "{{namespace}}")))

	// 1 for each step of the range where the container's GPU was idle, 0
	// where it worked: every container holding a GPU gets a row, the idle
	// ones sort first.
	idleSteps := fmt.Sprintf("(%s < bool %g)[$__range:$__interval]", m("containerGpuDutyCycle", ctrSel), IdleDutyCycle)
	b.row("Allocated but idle")
	b.add(24, 9, table("Allocated but idle GPUs",
		fmt.Sprintf("Every GPU a container holds, with the hours of the dashboard's time range it spent below %g %% duty cycle, the idle share of the time the container held it, and its duty cycle now. Alert GPUAllocatedIdle fires when the hourly mean stays below %g %% for an hour.", IdleDutyCycle, IdleDutyCycle),
		[]column{
			{Name: "Idle hours", Unit: "h", Th: neutralThresholds()},
			{Name: "Idle share", Unit: unitPercent, Th: &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green", Value: nil}, {Color: "orange", Value: f(50)}}}, Color: true},
			{Name: "Duty cycle now", Unit: unitPercent, Th: dutyThresholds(), Color: true},
		}, nil, "Idle hours",
		tabular(fmt.Sprintf("max by (%s) (sum_over_time(%s)) * $__interval_ms / 3600000", holder, idleSteps)),
		tabular(fmt.Sprintf("100 * max by (%s) (avg_over_time(%s))", holder, idleSteps)),
		tabular(fmt.Sprintf("max by (%s) (%s)", holder, m("containerGpuDutyCycle", ctrSel)))))
	b.add(24, 7, timeseries("Idle allocated GPUs", fmt.Sprintf("Number of GPUs held by a container and below %g %% duty cycle.", IdleDutyCycle), unitCount, neutralThresholds(),
		series(fmt.Sprintf("count(%s < %g) or vector(0)", allocatedDevices, IdleDutyCycle), "idle allocated GPUs")))

	memPct := fmt.Sprintf("100 * %s / %s", m("nodeGpumemoryUsedBytes", nodeSel), m("nodeGpumemoryTotalBytes", nodeSel))
	b.row("Memory")
	b.add(8, 8, timeseries("GPU memory used and total", "Memory of every GPU of the selected nodes.", unitBytes, neutralThresholds(),
		series("sum("+m("nodeGpumemoryUsedBytes", nodeSel)+")", "used"),
		series("sum("+m("nodeGpumemoryTotalBytes", nodeSel)+")", "total")))
	b.add(8, 8, timeseries("GPU memory used by namespace", "Memory used on the GPUs each namespace holds.", unitBytes, neutralThresholds(),
		series("sum by (namespace) ("+m("containerGpumemoryUsedBytes", ctrSel)+")", "{{namespace}}")))
	b.add(8, 8, stat("GPUs with memory nearly full", fmt.Sprintf("GPUs with more than %g %% of their memory in use (alert GPUMemoryNearlyFull).", MemoryNearlyFull), unitCount, countThresholds("red"),
		instant(fmt.Sprintf("count(%s > %g) or vector(0)", memPct, MemoryNearlyFull), "nearly full")))
	b.add(24, 9, bargauge("Fullest GPUs", "The ten GPUs with the largest share of their memory in use.", unitPercent, memoryThresholds(),
		instant("topk(10, "+memPct+")", "{{node}} {{gpu_id}}")))

	clusterHealth(b, nodeSel)

	b.row("Exporters")
	b.add(8, 6, stat("Exporters with a source up", "Exporters whose last query of each source succeeded.", unitCount, neutralThresholds(),
		instant(`sum by (source) (kube_gpu_exporter_up{cluster_name=~"$cluster"})`, "{{source}}")))
	b.add(8, 6, stat("Sources down", "Exporter sources (nvml, kubelet, kubernetes) whose last query failed, over all exporters.", unitCount, countThresholds("red"),
		instant(`count(kube_gpu_exporter_up{cluster_name=~"$cluster"} == 0) or vector(0)`, "down")))
	b.add(8, 6, stat("Unmatched kubelet devices", "Device IDs the kubelet assigned to containers that match no NVML device, over all exporters.", unitCount, countThresholds("orange"),
		instant(`sum(kube_gpu_exporter_unmatched_devices{cluster_name=~"$cluster"})`, "unmatched")))
	return b.d
}
