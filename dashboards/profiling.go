package dashboards

import "fmt"

// unitBytesRate is Grafana's bytes per second (SI).
const unitBytesRate = "Bps"

// Thresholds of alert GPUBusyButUnderused, in percent as the panels show
// them; the structural test checks them against the rule.
const (
	// BusyDutyCycle: a container's GPU above this duty cycle is busy.
	BusyDutyCycle = 80.0
	// UnderusedSMActive: a busy GPU with fewer of its SMs active is
	// underused.
	UnderusedSMActive = 30.0
)

// dashedOverride draws the series whose legend matches pattern dashed and
// unfilled: the reference line (duty cycle) beside the measured one.
func dashedOverride(p *Panel, pattern string) *Panel {
	p.FieldConfig.Overrides = append(p.FieldConfig.Overrides, Override{
		Matcher: Matcher{ID: "byRegexp", Options: pattern},
		Properties: []Property{
			{ID: "custom.lineStyle", Value: map[string]any{"fill": "dash", "dash": []int{10, 10}}},
			{ID: "custom.fillOpacity", Value: 0},
		},
	})
	return p
}

// smVersusDuty is a panel of SM activity (solid) against the duty cycle
// (dashed) of the same devices: a duty cycle far above SM activity is a
// GPU that looks busy but does little. The duty cycle is kept only where
// GPM reports, so every dashed line has its solid partner.
func smVersusDuty(title, what, smMetric, dutyMetric, selector, by, match, legend string) *Panel {
	sm := fmt.Sprintf("100 * max by (%s) (%s)", by, m(smMetric, selector))
	duty := fmt.Sprintf("max by (%s) (%s)\n  and on (%s) %s", by, m(dutyMetric, selector), match, sm)
	return dashedOverride(timeseries(title,
		fmt.Sprintf("SM activity (GPM, solid: share of time the SMs had a warp resident) against the duty cycle (dashed: share of time any kernel ran) of %s. A duty cycle far above SM activity is a GPU that looks busy but does little: alert GPUBusyButUnderused fires above %g %% duty cycle with SM activity under %g %%. Hopper and newer only.",
			what, BusyDutyCycle, UnderusedSMActive),
		unitPercent, dutyThresholds(),
		series(sm, "SM active "+legend),
		series(duty, "duty cycle "+legend)), "^duty cycle .*")
}

// workloadProfiling adds the workload dashboard's GPM row: what the
// containers' duty cycle is made of.
func workloadProfiling(b *board, wSel, dev string) {
	const legend = "{{pod}}/{{container}} {{gpu_id}}"
	ratio := func(metric string) string {
		return fmt.Sprintf("100 * max by (%s) (%s)", dev, m(metric, wSel))
	}
	b.row("Real utilisation (GPM)")
	b.add(12, 9, smVersusDuty("SM activity vs duty cycle per container", "each GPU a container holds, its share on a shared GPU",
		"kube_gpu_container_sm_active_ratio", "containerGpuDutyCycle", wSel, dev, "gpu_id, pod, container", legend))
	b.add(12, 9, timeseries("Tensor, DRAM and occupancy per container",
		"Tensor core activity, DRAM bandwidth use and SM occupancy (resident warps over the maximum) of each GPU a container holds, its share on a shared GPU. Low tensor activity in a training or inference job often means FP32 instead of mixed precision; high DRAM with low SM activity a memory-bound kernel. Hopper and newer only.",
		unitPercent, neutralThresholds(),
		series(ratio("kube_gpu_container_tensor_active_ratio"), "tensor "+legend),
		series(ratio("kube_gpu_container_dram_active_ratio"), "DRAM "+legend),
		series(ratio("kube_gpu_container_sm_occupancy_ratio"), "occupancy "+legend)))
}

// nodeProfiling adds the node dashboard's GPM row, per GPU whoever holds
// it, and which GPUs have no GPM at all.
func nodeProfiling(b *board, nodeSel, dev string) {
	ratio := func(metric string) string {
		return fmt.Sprintf("100 * max by (%s) (%s)", dev, m(metric, nodeSel))
	}
	b.row("Real utilisation (GPM)")
	b.add(6, 9, stat("GPUs without GPM",
		"Devices of the node that report no GPM metrics: kube_gpu_family_supported{family=\"gpm\"} is 0 on GPUs older than Hopper (A100, A30, L4, T4, ...) and with --no-collector.profiling. The panels of this row have no line for them.",
		unitCount, countThresholds("blue"),
		instant("count("+m("kube_gpu_family_supported", sel(nodeSel, `family="gpm"`))+" == 0) or vector(0)", "without GPM")))
	b.add(18, 9, smVersusDuty("SM activity vs duty cycle per GPU", "every device of the node",
		"kube_gpu_sm_active_ratio", "nodeGpuDutyCycle", nodeSel, dev, "gpu_id", "{{gpu_id}}"))
	b.add(12, 9, timeseries("Tensor, DRAM and occupancy per GPU",
		"Tensor core activity, DRAM bandwidth use and SM occupancy of each device. Hopper and newer only.",
		unitPercent, neutralThresholds(),
		series(ratio("kube_gpu_tensor_active_ratio"), "tensor {{gpu_id}}"),
		series(ratio("kube_gpu_dram_active_ratio"), "DRAM {{gpu_id}}"),
		series(ratio("kube_gpu_sm_occupancy_ratio"), "occupancy {{gpu_id}}")))
	b.add(12, 9, timeseries("PCIe and NVLink traffic per GPU",
		"Bytes per second each GPU sends (tx) and receives (rx) over PCIe (host traffic: data loading, checkpoints) and over all its NVLinks (peer traffic: all-reduce between GPUs). Whole GPUs on Hopper and newer.",
		unitBytesRate, neutralThresholds(),
		series(fmt.Sprintf("max by (%s, direction) (%s)", dev, m("kube_gpu_pcie_bandwidth_bytes_per_second", nodeSel)), "PCIe {{direction}} {{gpu_id}}"),
		series(fmt.Sprintf("max by (%s, direction) (%s)", dev, m("kube_gpu_nvlink_bandwidth_bytes_per_second", nodeSel)), "NVLink {{direction}} {{gpu_id}}")))
}
