package dashboards

import "fmt"

// Units of the chargeback panels. Grafana has no GPU-hour unit: a suffix.
const (
	unitGPUHours = "suffix: GPU-h"
	unitKWh      = "kwatth"
	// Prices are in whatever currency chargeback.pricePerGPUHour is given in.
	unitCost = "none"
)

// RulesPerHour is how many times an hour the chargeback recording rules run
// (their group's interval is 1m). Each sample of a ...:increase1h series is
// the hour before it, so summing the samples over a range and dividing by
// RulesPerHour gives the range's total: a pod that ran for ten minutes adds
// its ten minutes, whereas a mean over the range would spread them over
// every hour of it.
const RulesPerHour = 60

// Cost is the chargeback view: GPU-hours allocated and used, idle
// GPU-hours, energy and cost per namespace and pod, from the chargeback
// recording rules (deploy/prometheus/chargeback.rules.yaml) and, where the
// chart's prices are set, the cost rules.
func Cost() *Dashboard {
	const (
		nsSel      = `cluster_name=~"$cluster", namespace=~"$namespace"`
		clusterSel = `cluster_name=~"$cluster"`
	)
	rec := func(level, what string) string {
		return fmt.Sprintf("%s:kube_gpu_%s:increase1h", level, what)
	}
	// total is the figure over the window, summed by the given labels.
	total := func(by, level, what, window, selector string) string {
		return fmt.Sprintf("sum%s (sum_over_time(%s[%s])) / %d", by, m(rec(level, what), selector), window, RulesPerHour)
	}
	// share is used over allocated: the division by RulesPerHour cancels,
	// and leaving it out keeps "/ 60" from binding to the wrong operand.
	share := func(by string) string {
		sum := func(what string) string {
			return fmt.Sprintf("sum%s (sum_over_time(%s[$__range]))", by, m(rec("namespace", what), nsSel))
		}
		return "100 * " + sum("used_gpu_hours") + "\n  / " + sum("allocated_gpu_hours")
	}
	ns := func(what string) string { return total(" by (namespace)", "namespace", what, "$__range", nsSel) }
	pod := func(what string) string {
		return total(" by (namespace, pod)", "namespace_pod", what, "$__range", nsSel)
	}
	all := func(what string) string { return total("", "namespace", what, "$__range", nsSel) }
	daily := func(what string) string { return total(" by (namespace)", "namespace", what, "1d", nsSel) }
	hourly := func(what string) string {
		return fmt.Sprintf("sum by (namespace) (%s)", m(rec("namespace", what), nsSel))
	}

	b := newBoard("kube-gpu-exporter-cost", "Kubernetes / GPU / Cost",
		"GPU-hours, energy and cost per namespace and pod, for chargeback, from kube-gpu-exporter's recording rules.",
		[]string{"kube-gpu-exporter", "gpu", "kubernetes", "cost"},
		clusterVariable(),
		queryVariable("namespace", "Namespace", "Namespaces whose containers held GPUs.",
			`{__name__="kube_gpu_container_allocated_gpu_seconds_total", cluster_name=~"$cluster"}`, "namespace", true, true),
	)

	b.row("Totals over the time range")
	b.add(4, 5, stat("GPU-hours allocated", "Time × part of a GPU held: a whole GPU for an hour is 1, a 3g MIG instance 3/7, one of two time-slicing holders 1/2.", unitGPUHours, neutralThresholds(),
		instant(all("allocated_gpu_hours"), "allocated")))
	b.add(4, 5, stat("GPU-hours used", "Allocated GPU-hours weighted by the duty cycle of the GPU (share) held.", unitGPUHours, neutralThresholds(),
		instant(all("used_gpu_hours"), "used")))
	b.add(4, 5, stat("Idle GPU-hours", "GPU-hours held but not used: allocated − used.", unitGPUHours, countThresholds("orange"),
		instant(all("idle_gpu_hours"), "idle")))
	b.add(4, 5, stat("Used share", "Used over allocated GPU-hours.", unitPercent, dutyThresholds(),
		instant(share(""), "used")))
	b.add(4, 5, stat("Energy", "Energy of the GPUs given to the containers of the selected namespaces.", unitKWh, neutralThresholds(),
		instant(all("energy_kwh"), "energy")))
	b.add(4, 5, stat("Cost", "GPU-hours and energy at the chart's chargeback prices; empty where no price is set.", unitCost, neutralThresholds(),
		instant(fmt.Sprintf("sum (sum_over_time(%s[$__range])) / %d", m(rec("namespace", "cost"), nsSel), RulesPerHour), "cost")))
	b.add(24, 4, stat("Energy no namespace pays for",
		"Energy of GPUs nobody held (unallocated), and of shared GPUs going to processes of no holder (unattributed). With the namespaces' energy it adds up to the GPUs' energy.",
		unitKWh, neutralThresholds(),
		instant(total("", "cluster", "unallocated_energy_kwh", "$__range", clusterSel)+" or vector(0)", "unallocated"),
		instant(total("", "cluster", "unattributed_energy_kwh", "$__range", clusterSel)+" or vector(0)", "unattributed"),
		instant(total("", "cluster", "energy_kwh", "$__range", clusterSel), "all GPUs")))

	b.row("Per namespace and pod")
	b.add(24, 9, table("Namespaces", "GPU-hours, energy and cost of each namespace over the time range.",
		[]column{
			{Name: "Allocated", Unit: unitGPUHours},
			{Name: "Used", Unit: unitGPUHours},
			{Name: "Idle", Unit: unitGPUHours},
			{Name: "Used share", Unit: unitPercent, Th: dutyThresholds(), Color: true},
			{Name: "Energy", Unit: unitKWh},
			{Name: "Cost", Unit: unitCost},
		}, nil, "Allocated",
		tabular(ns("allocated_gpu_hours")),
		tabular(ns("used_gpu_hours")),
		tabular(ns("idle_gpu_hours")),
		tabular(share(" by (namespace)")),
		tabular(ns("energy_kwh")),
		tabular(ns("cost"))))
	b.add(24, 9, table("Idle waste ranking", "Pods by GPU-hours held but not used over the time range, most first, with what they cost.",
		[]column{
			{Name: "Idle", Unit: unitGPUHours, Th: countThresholds("orange"), Color: true},
			{Name: "Allocated", Unit: unitGPUHours},
			{Name: "Idle cost", Unit: unitCost},
		}, nil, "Idle",
		tabular(pod("idle_gpu_hours")),
		tabular(pod("allocated_gpu_hours")),
		tabular(pod("idle_gpu_hours_cost"))))
	b.add(12, 8, timeseries("GPU-hours allocated and used, per hour", "Each point is the hour before it: allocated (GPUs held on average) and used.", unitGPUHours, neutralThresholds(),
		series(hourly("allocated_gpu_hours"), "allocated {{namespace}}"),
		series(hourly("used_gpu_hours"), "used {{namespace}}")))
	b.add(12, 8, timeseries("Energy and cost, per hour", "Each point is the hour before it.", unitKWh, neutralThresholds(),
		series(hourly("energy_kwh"), "{{namespace}} kWh"),
		series(fmt.Sprintf("sum by (namespace) (%s)", m(rec("namespace", "cost"), nsSel)), "{{namespace}} cost")))

	b.row("Trend, per day")
	trend := func(p *Panel) *Panel {
		p.Interval, p.TimeFrom = "1d", "30d"
		p.FieldConfig.Defaults.Custom["drawStyle"] = "bars"
		p.FieldConfig.Defaults.Custom["fillOpacity"] = 60
		return p
	}
	b.add(8, 8, trend(timeseries("GPU-hours per day, 30 days", "Allocated and used GPU-hours of each namespace, one bar per day.", unitGPUHours, neutralThresholds(),
		series(daily("allocated_gpu_hours"), "allocated {{namespace}}"),
		series(daily("used_gpu_hours"), "used {{namespace}}"))))
	b.add(8, 8, trend(timeseries("Energy per day, 30 days", "Energy of each namespace, one bar per day.", unitKWh, neutralThresholds(),
		series(daily("energy_kwh"), "{{namespace}}"))))
	b.add(8, 8, trend(timeseries("Cost per day, 30 days", "Cost of each namespace at the chart's prices, one bar per day.", unitCost, neutralThresholds(),
		series(daily("cost"), "{{namespace}}"))))
	return b.d
}
