package dashboards

import "fmt"

// workloadPeers adds the workload dashboard's straggler row: each selected
// pod's GPU use against the median of its workload's pods, as the
// recording rules behind alert GPUWorkloadStraggler compute them.
func workloadPeers(b *board, wSel, nsSel string) {
	const (
		podRatio = "namespace_workload_pod:kube_gpu_utilization:ratio"
		wl       = "workload_kind, workload_name"
	)
	b.row("Pods of one workload")
	peers := timeseries("Pods against their workload's median",
		"GPU use of each selected pod (SM activity where GPM measures it, else duty cycle) and, dashed, the median of its workload's pods "+
			"(kube_gpu_pod_workload_info names the workload). A pod of a workload of 3 pods or more that stays over 20 points below "+
			"the median for 10 minutes raises GPUWorkloadStraggler: distributed jobs wait for their slowest rank.",
		unitPercent, neutralThresholds(),
		series(fmt.Sprintf("100 * max by (%s, pod) (%s)", wl, m(podRatio, wSel)), "{{workload_kind}}/{{workload_name}} {{pod}}"),
		series(fmt.Sprintf("100 * max by (%s) (%s)\n  and on (%s) max by (%s) (%s)",
			wl, m("namespace_workload:kube_gpu_utilization:median", nsSel), wl, wl, m(podRatio, wSel)),
			"median {{workload_kind}}/{{workload_name}}"))
	peers.FieldConfig.Overrides = []Override{{
		Matcher: Matcher{ID: "byRegexp", Options: "^median .*"},
		Properties: []Property{
			{ID: "custom.lineStyle", Value: map[string]any{"fill": "dash", "dash": []int{10, 10}}},
			{ID: "custom.fillOpacity", Value: 0},
		},
	}}
	b.add(16, 9, peers)
	b.add(8, 9, table("Workloads", "The namespace's workloads with GPU pods: how many pods, the median of their GPU use and the median absolute deviation from it (the spread one slow pod barely moves).",
		[]column{{Name: "Pods", Unit: unitCount}, {Name: "Median", Unit: unitPercent}, {Name: "MAD", Unit: unitPercent}}, nil, "Pods",
		tabular(fmt.Sprintf("max by (%s) (%s)", wl, m("namespace_workload:kube_gpu_pods:count", nsSel))),
		tabular(fmt.Sprintf("100 * max by (%s) (%s)", wl, m("namespace_workload:kube_gpu_utilization:median", nsSel))),
		tabular(fmt.Sprintf("100 * max by (%s) (%s)", wl, m("namespace_workload:kube_gpu_utilization:mad", nsSel)))))
}
