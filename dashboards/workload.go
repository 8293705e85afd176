package dashboards

import "fmt"

// Workload follows one namespace, or some of its pods: duty cycle per
// container, memory used against total, requests against limits.
func Workload() *Dashboard {
	const (
		wSel = `cluster_name=~"$cluster", namespace="$namespace", pod=~"$pod"`
		dev  = "node, pod, container, gpu_id, gpu_model"
	)
	b := newBoard("kube-gpu-exporter-workload", "Kubernetes / GPU / Workload",
		"GPU use of the containers of one namespace or pod, from kube-gpu-exporter.",
		[]string{"kube-gpu-exporter", "gpu", "kubernetes"},
		clusterVariable(),
		queryVariable("namespace", "Namespace", "Namespaces with containers that request or hold GPUs.",
			`{__name__=~"containerGpuRequests|containerGpuDutyCycle", cluster_name=~"$cluster"}`, "namespace", false, false),
		queryVariable("pod", "Pod", "Pods of the namespace that request or hold GPUs.",
			`{__name__=~"containerGpuRequests|containerGpuDutyCycle", cluster_name=~"$cluster", namespace="$namespace"}`, "pod", true, true),
	)

	b.row("Summary")
	b.add(5, 5, stat("Requested", "GPUs the selected pods request, per resource.", unitCount, neutralThresholds(),
		instant("sum by (resource) ("+m("kube_gpu_pod_requests", wSel)+")", "{{resource}}")))
	b.add(5, 5, stat("Limits", "GPU limits of the selected pods, per resource.", unitCount, neutralThresholds(),
		instant("sum by (resource) ("+m("containerGpuLimits", wSel)+")", "{{resource}}")))
	b.add(5, 5, stat("Mean duty cycle", "Mean duty cycle of the GPUs the selected pods hold.", unitPercent, dutyThresholds(),
		instant("avg("+m("containerGpuDutyCycle", wSel)+")", "mean")))
	b.add(4, 5, stat("Idle GPUs", fmt.Sprintf("GPUs the selected pods hold whose duty cycle is below %g %%.", IdleDutyCycle), unitCount, countThresholds("orange"),
		instant(fmt.Sprintf("count(%s < %g) or vector(0)", m("containerGpuDutyCycle", wSel), IdleDutyCycle), "idle")))
	b.add(5, 5, stat("Memory used", "Memory in use over memory available on the GPUs the selected pods hold.", unitPercent, memoryThresholds(),
		instant("100 * sum("+m("containerGpumemoryUsedBytes", wSel)+")\n  / sum("+m("containerGpumemoryTotalBytes", wSel)+")", "used")))

	b.row("Utilisation")
	b.add(24, 9, timeseries("Duty cycle per container",
		fmt.Sprintf("Duty cycle of each GPU a container holds. Below %g %% the GPU is idle (alert GPUAllocatedIdle), above %g %% saturated (alert GPUSaturated).", IdleDutyCycle, SaturatedDutyCycle),
		unitPercent, dutyThresholds(),
		series(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpuDutyCycle", wSel)), "{{pod}}/{{container}} {{gpu_id}}")))
	memory := timeseries("Memory used and total per container", "Memory in use (solid) against the device's memory (dashed) for each GPU a container holds.", unitBytes, neutralThresholds(),
		series(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpumemoryUsedBytes", wSel)), "used {{pod}}/{{container}} {{gpu_id}}"),
		series(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpumemoryTotalBytes", wSel)), "total {{pod}}/{{container}} {{gpu_id}}"))
	memory.FieldConfig.Overrides = []Override{{
		Matcher: Matcher{ID: "byRegexp", Options: "^total .*"},
		Properties: []Property{
			{ID: "custom.lineStyle", Value: map[string]any{"fill": "dash", "dash": []int{10, 10}}},
			{ID: "custom.fillOpacity", Value: 0},
		},
	}}
	b.add(12, 9, memory)
	b.add(12, 9, timeseries("Memory used per container, share",
		fmt.Sprintf("Share of each GPU's memory in use; alert GPUMemoryNearlyFull fires above %g %%.", MemoryNearlyFull),
		unitPercent, memoryThresholds(),
		series(fmt.Sprintf("100 * max by (%s) (%s)\n  / max by (%s) (%s)", dev, m("containerGpumemoryUsedBytes", wSel), dev, m("containerGpumemoryTotalBytes", wSel)), "{{pod}}/{{container}} {{gpu_id}}")))

	workloadProfiling(b, wSel, dev)
	workloadPeers(b, wSel, `cluster_name=~"$cluster", namespace="$namespace"`)

	b.row("Requests and limits")
	b.add(12, 8, table("Requests and limits per container", "GPU requests against limits of each container, per resource.",
		[]column{{Name: "Requests", Unit: unitCount}, {Name: "Limits", Unit: unitCount}}, nil, "Requests",
		tabular("sum by (node, pod, container, resource) ("+m("containerGpuRequests", wSel)+")"),
		tabular("sum by (node, pod, container, resource) ("+m("containerGpuLimits", wSel)+")")))
	b.add(12, 8, timeseries("Requests and limits", "Requests and limits of the selected pods over time, per resource.", unitCount, neutralThresholds(),
		series("sum by (resource) ("+m("kube_gpu_pod_requests", wSel)+")", "requests {{resource}}"),
		series("sum by (resource) ("+m("containerGpuLimits", wSel)+")", "limits {{resource}}")))
	b.add(24, 8, table("GPUs held", "Every GPU the selected containers hold, with its duty cycle and memory now.",
		[]column{
			{Name: "Duty cycle", Unit: unitPercent, Th: dutyThresholds(), Color: true},
			{Name: "Memory used", Unit: unitBytes},
			{Name: "Memory total", Unit: unitBytes},
		}, nil, "",
		tabular(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpuDutyCycle", wSel))),
		tabular(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpumemoryUsedBytes", wSel))),
		tabular(fmt.Sprintf("max by (%s) (%s)", dev, m("containerGpumemoryTotalBytes", wSel)))))
	return b.d
}
