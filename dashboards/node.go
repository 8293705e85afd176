package dashboards

import "fmt"

// Node shows every GPU of one node, allocated or not, the containers that
// hold them and the health of the node's exporter.
func Node() *Dashboard {
	const (
		nodeSel = `cluster_name=~"$cluster", node="$node"`
		ctrSel  = `cluster_name=~"$cluster", node="$node", namespace=~"$namespace"`
		dev     = "gpu_id, gpu_model"
	)
	b := newBoard("kube-gpu-exporter-node", "Kubernetes / GPU / Node",
		"Every GPU of one node, the containers holding them, and the health of the node's kube-gpu-exporter.",
		[]string{"kube-gpu-exporter", "gpu", "kubernetes"},
		clusterVariable(),
		queryVariable("node", "Node", "Nodes that report GPUs.",
			`{__name__=~"nodeGpuDutyCycle|nodeGpuCapacity", cluster_name=~"$cluster"}`, "node", false, false),
		queryVariable("namespace", "Namespace", "Filters the per-container panels.",
			`{__name__=~"containerGpuRequests|containerGpuDutyCycle", cluster_name=~"$cluster", node="$node"}`, "namespace", true, true),
	)

	// holders lists who holds each device (whatever the namespace filter:
	// the device table shows every GPU of the node).
	holders := "group by (gpu_id, namespace, pod, container) (" + m("containerGpuDutyCycle", nodeSel) + ")"
	// withHolder adds the holder's namespace, pod and container to a
	// per-device query: one row per holder (several under time-slicing),
	// and the bare device row for GPUs nobody holds.
	withHolder := func(metric string) string {
		d := fmt.Sprintf("max by (%s) (%s)", dev, m(metric, nodeSel))
		return fmt.Sprintf("(\n  %s\n  + on (gpu_id) group_right (gpu_model) (0 * %s)\n)\nor on (gpu_id) %s", d, holders, d)
	}

	b.row("GPUs")
	b.add(4, 5, stat("GPUs", "Devices NVML reports on the node (MIG instances count as devices).", unitCount, neutralThresholds(),
		instant("count("+m("nodeGpuDutyCycle", nodeSel)+")", "GPUs")))
	b.add(4, 5, stat("Held by containers", "Devices that at least one container holds.", unitCount, neutralThresholds(),
		instant("count(count by (gpu_id) ("+m("containerGpuDutyCycle", nodeSel)+")) or vector(0)", "held")))
	b.add(5, 5, stat("Capacity", "The node's GPU capacity per extended resource.", unitCount, neutralThresholds(),
		instant("max by (resource) ("+m("nodeGpuCapacity", nodeSel)+")", "{{resource}}")))
	b.add(5, 5, stat("Allocatable", "The node's allocatable GPUs per extended resource.", unitCount, neutralThresholds(),
		instant("max by (resource) ("+m("nodeGpuAllocatable", nodeSel)+")", "{{resource}}")))
	b.add(6, 5, stat("Mean duty cycle", "Mean duty cycle of every GPU of the node.", unitPercent, dutyThresholds(),
		instant("avg("+m("nodeGpuDutyCycle", nodeSel)+")", "mean")))

	b.add(24, 10, table("Devices",
		"Every device of the node with the container holding it; a shared (time-sliced) GPU shows one row per holder, a free GPU a row without a pod.",
		[]column{
			{Name: "Duty cycle", Unit: unitPercent, Th: dutyThresholds(), Color: true},
			{Name: "Memory used", Unit: unitBytes},
			{Name: "Memory total", Unit: unitBytes},
			{Name: "Memory used %", Unit: unitPercent, Th: memoryThresholds(), Color: true},
		}, nil, "",
		tabular(withHolder("nodeGpuDutyCycle")),
		tabular(withHolder("nodeGpumemoryUsedBytes")),
		tabular(withHolder("nodeGpumemoryTotalBytes")),
		tabular(fmt.Sprintf("100 * %s\n/ %s", paren(withHolder("nodeGpumemoryUsedBytes")), paren(withHolder("nodeGpumemoryTotalBytes"))))))

	b.add(12, 9, timeseries("Duty cycle per GPU", "Every device of the node, allocated or not.", unitPercent, dutyThresholds(),
		series(fmt.Sprintf("max by (%s) (%s)", dev, m("nodeGpuDutyCycle", nodeSel)), "{{gpu_id}}")))
	b.add(12, 9, timeseries("Memory used per GPU", fmt.Sprintf("Share of each device's memory in use; alert GPUMemoryNearlyFull fires above %g %%.", MemoryNearlyFull), unitPercent, memoryThresholds(),
		series(fmt.Sprintf("100 * max by (%s) (%s)\n  / max by (%s) (%s)", dev, m("nodeGpumemoryUsedBytes", nodeSel), dev, m("nodeGpumemoryTotalBytes", nodeSel)), "{{gpu_id}}")))
	b.add(12, 9, timeseries("Memory used per GPU, bytes", "Memory in use on each device, with the node's total.", unitBytes, neutralThresholds(),
		series(fmt.Sprintf("max by (%s) (%s)", dev, m("nodeGpumemoryUsedBytes", nodeSel)), "{{gpu_id}}"),
		series("sum("+m("nodeGpumemoryTotalBytes", nodeSel)+")", "node total")))
	b.add(12, 9, timeseries("GPUs held", "Devices held by containers and devices that nobody holds.", unitCount, neutralThresholds(),
		series("count(count by (gpu_id) ("+m("containerGpuDutyCycle", nodeSel)+")) or vector(0)", "held"),
		series(fmt.Sprintf("count(%s unless on (gpu_id) %s) or vector(0)", m("nodeGpuDutyCycle", nodeSel), m("containerGpuDutyCycle", nodeSel)), "free")))

	nodeProfiling(b, nodeSel, dev)
	nodeHealth(b, nodeSel)

	b.row("Containers")
	b.add(12, 9, timeseries("Duty cycle by container", "Duty cycle of the GPUs each container on the node holds.", unitPercent, dutyThresholds(),
		series("max by (namespace, pod, container, gpu_id) ("+m("containerGpuDutyCycle", ctrSel)+")", "{{namespace}}/{{pod}}/{{container}} {{gpu_id}}")))
	b.add(12, 9, timeseries("Memory used by container", "Memory in use on the GPUs each container on the node holds.", unitBytes, neutralThresholds(),
		series("max by (namespace, pod, container, gpu_id) ("+m("containerGpumemoryUsedBytes", ctrSel)+")", "{{namespace}}/{{pod}}/{{container}} {{gpu_id}}")))
	b.add(24, 8, table("Requests and limits", "GPU requests and limits of the containers on the node.",
		[]column{{Name: "Requests", Unit: unitCount}, {Name: "Limits", Unit: unitCount}}, nil, "Requests",
		tabular("max by (namespace, pod, container, resource) ("+m("containerGpuRequests", ctrSel)+")"),
		tabular("max by (namespace, pod, container, resource) ("+m("containerGpuLimits", ctrSel)+")")))

	// The exporter's own metrics carry no node label: they are tied to the
	// node through the scrape target (instance, job) that reports it.
	sameTarget := "on (instance, job) group_left () group by (instance, job) (" +
		`{__name__=~"nodeGpuDutyCycle|nodeGpuCapacity|nodeGpuAllocatable", ` + nodeSel + "})"
	self := func(metric string) string {
		return m(metric, `cluster_name=~"$cluster"`) + "\n  * " + sameTarget
	}
	b.row("Exporter")
	upMap := []any{map[string]any{"type": "value", "options": map[string]any{
		"0": map[string]any{"color": "red", "index": 1, "text": "down"},
		"1": map[string]any{"color": "green", "index": 0, "text": "up"},
	}}}
	up := stat("Sources", "Whether the exporter's last query of each source succeeded.", unitCount,
		&Thresholds{Mode: "absolute", Steps: []Step{{Color: "red", Value: nil}, {Color: "green", Value: f(1)}}},
		instant("max by (source) (\n  "+self("kube_gpu_exporter_up")+"\n)", "{{source}}"))
	up.FieldConfig.Defaults.Mappings = upMap
	up.Options["graphMode"] = "none"
	b.add(8, 5, up)
	b.add(4, 5, stat("Unmatched kubelet devices", "Kubelet device IDs that match no NVML device: GPUs the exporter cannot attribute.", unitCount, countThresholds("orange"),
		instant("max(\n  "+self("kube_gpu_exporter_unmatched_devices")+"\n)", "unmatched")))
	version := stat("Exporter version", "From kube_gpu_exporter_build_info.", unitCount, neutralThresholds(),
		instant("max by (version, revision) (\n  "+self("kube_gpu_exporter_build_info")+"\n)", "{{version}} ({{revision}})"))
	version.Options["textMode"] = "name"
	version.Options["graphMode"] = "none"
	b.add(12, 5, version)
	b.add(12, 8, timeseries("Query duration by source", "How long the exporter's last query of each source took.", unitSeconds, neutralThresholds(),
		series("max by (source) (\n  "+self("kube_gpu_exporter_scrape_duration_seconds")+"\n)", "{{source}}")))
	// A source that never failed has no error series yet: it shows as 0.
	b.add(12, 8, timeseries("Errors", "Errors per second by source and reason; 0 for sources without errors.", unitRate, neutralThresholds(),
		series("sum by (source, reason) (\n  rate(kube_gpu_exporter_errors_total{cluster_name=~\"$cluster\"}[$__rate_interval])\n  * "+sameTarget+"\n)\nor on (source)\nsum by (source) (0 * "+self("kube_gpu_exporter_up")+")", "{{source}} {{reason}}")))
	return b.d
}

func paren(s string) string { return "(" + s + ")" }
