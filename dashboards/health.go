package dashboards

import "fmt"

// Units of the device telemetry panels (Grafana unit identifiers).
const (
	unitWatts   = "watt"
	unitCelsius = "celsius"
	unitHertz   = "hertz"
)

// healthLevel turns a health status family into one number per group:
// 2 failed, 1 degraded and, with healthy set, 0 healthy, for colouring,
// sorting and a state timeline.
func healthLevel(metric, selector, by string, healthy bool) string {
	one := func(status string) string {
		return fmt.Sprintf("max by (%s) (%s == 1)", by, m(metric, sel(selector, `status="`+status+`"`)))
	}
	out := fmt.Sprintf("2 * %s\nor 1 * %s", one("failed"), one("degraded"))
	if healthy {
		out += "\nor 0 * " + one("healthy")
	}
	return out
}

// withHolders lists a device health level once per container holding the
// device, and once without holder for a device nobody holds.
func withHolders(selector, dev string, healthy bool) string {
	return fmt.Sprintf("(\n%s\n)\nor on (%s)\n(\n%s\n)",
		healthLevel("kube_gpu_container_health_status", selector, dev+", namespace, pod, container, status, reason", healthy),
		dev,
		healthLevel("kube_gpu_health_status", selector, dev+", status, reason", healthy))
}

// healthMappings name and colour the health levels.
func healthMappings() []any {
	return []any{map[string]any{"type": "value", "options": map[string]any{
		"0": map[string]any{"color": "green", "index": 0, "text": "healthy"},
		"1": map[string]any{"color": "orange", "index": 1, "text": "degraded"},
		"2": map[string]any{"color": "red", "index": 2, "text": "failed"},
	}}}
}

func healthThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green", Value: nil}, {Color: "orange", Value: f(1)}, {Color: "red", Value: f(2)}}}
}

// stateTimeline draws each series as a band of coloured states.
func stateTimeline(title, description string, mappings []any, th *Thresholds, targets ...*Target) *Panel {
	fc := fieldConfig(unitCount, th)
	fc.Defaults.Mappings = mappings
	fc.Defaults.Custom = map[string]any{"fillOpacity": 80, "lineWidth": 0}
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: fc,
		Options: map[string]any{
			"alignValue":  "left",
			"mergeValues": true,
			"rowHeight":   0.8,
			"showValue":   "never",
			"legend":      map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip":     map[string]any{"mode": "single", "sort": "none"},
		},
		Targets: withRefIDs(targets),
		Title:   title,
		Type:    "state-timeline",
	}
}

// nodeHealth adds the node dashboard's device telemetry and health rows:
// device-level readings only, whatever the namespace filter.
func nodeHealth(b *board, nodeSel string) {
	perGPU := func(metric, extra string) string {
		s := nodeSel
		if extra != "" {
			s = sel(nodeSel, extra)
		}
		return fmt.Sprintf("max by (gpu_id) (%s)", m(metric, s))
	}
	b.row("Health")
	b.add(24, 8, table("GPU health",
		"Health of every GPU of the node and the containers holding it: failed (lost, critical Xid in the last 10 minutes, row-remap failure, recovery action needed), degraded (uncorrectable ECC errors, pending row remap, thermal slowdown) or healthy. Health 2 is failed, 1 degraded, 0 healthy. Alerts GPUFailed, GPUCriticalXid, GPUUncorrectableECCErrors, GPURowRemapFailure, GPURowRemapPending and GPUThrottled.",
		[]column{{Name: "Health", Unit: unitCount, Th: healthThresholds(), Color: true}},
		nil, "Health",
		tabular(withHolders(nodeSel, "gpu_id", true))))
	health := stateTimeline("Health over time", "Each GPU's health: healthy, degraded or failed.", healthMappings(), healthThresholds(),
		series(healthLevel("kube_gpu_health_status", nodeSel, "gpu_id", true), "{{gpu_id}}"))
	b.add(24, 8, health)

	b.row("Power, temperature and clocks")
	b.add(12, 9, timeseries("Power per GPU", "Board power draw of each GPU, with its enforced power limit.", unitWatts, neutralThresholds(),
		series(perGPU("kube_gpu_power_usage_watts", ""), "{{gpu_id}}"),
		series(perGPU("kube_gpu_power_limit_watts", ""), "limit {{gpu_id}}")))
	b.add(12, 9, timeseries("Temperature per GPU", "GPU die and, on HBM boards, memory temperature. Thermal slowdown starts in the high 80s °C on data-center GPUs.", unitCelsius,
		&Thresholds{Mode: "absolute", Steps: []Step{{Color: "green", Value: nil}, {Color: "orange", Value: f(80)}, {Color: "red", Value: f(90)}}},
		series("max by (gpu_id, sensor) ("+m("kube_gpu_temperature_celsius", nodeSel)+")", "{{gpu_id}} {{sensor}}")))
	b.add(12, 9, timeseries("SM clock per GPU", "Current SM clock of each GPU, and the highest maximum among them: a clock well below its maximum under load is throttled.", unitHertz, neutralThresholds(),
		series(perGPU("kube_gpu_clock_hertz", `clock="sm"`), "{{gpu_id}}"),
		series("max("+m("kube_gpu_clock_max_hertz", sel(nodeSel, `clock="sm"`))+")", "maximum")))
	b.add(12, 9, timeseries("Memory clock per GPU", "Current memory clock of each GPU, and the highest maximum among them.", unitHertz, neutralThresholds(),
		series(perGPU("kube_gpu_clock_hertz", `clock="memory"`), "{{gpu_id}}"),
		series("max("+m("kube_gpu_clock_max_hertz", sel(nodeSel, `clock="memory"`))+")", "maximum")))
	b.add(24, 8, stateTimeline("Throttle reasons",
		"Clock event (throttle) reasons active on each GPU. sw_power_cap and gpu_idle are normal operation; sw/hw_thermal_slowdown and hw_power_brake_slowdown for 10 minutes raise GPUThrottled. Empty when nothing holds the clocks back.",
		[]any{map[string]any{"type": "value", "options": map[string]any{"1": map[string]any{"color": "orange", "index": 0, "text": "active"}}}},
		&Thresholds{Mode: "absolute", Steps: []Step{{Color: "orange", Value: nil}}},
		series("max by (gpu_id, reason) ("+m("kube_gpu_clock_event_active", nodeSel)+") == 1", "{{gpu_id}} {{reason}}")))
}

// clusterHealth adds the cluster dashboard's unhealthy GPU table. It
// follows the node filter only: a broken GPU matters whoever holds it.
func clusterHealth(b *board, nodeSel string) {
	unhealthy := func(metric, by string) string {
		return fmt.Sprintf("max by (%s) (%s == 1)", by, m(metric, sel(nodeSel, `status!="healthy"`)))
	}
	b.row("Health")
	b.add(6, 7, stat("GPUs unhealthy now", "GPUs of the selected nodes that are degraded or failed.", unitCount, countThresholds("red"),
		instant("count("+unhealthy("kube_gpu_health_status", "cluster_name, node, gpu_id")+") or vector(0)", "unhealthy")))
	b.add(18, 7, table("Unhealthy GPUs",
		"Every degraded or failed GPU of the selected nodes, with the reason and the containers holding it (one row per holder; a row without a pod for a GPU nobody holds). Health 2 is failed, 1 degraded. See docs/alerts.md for the runbooks.",
		[]column{{Name: "Health", Unit: unitCount, Th: healthThresholds(), Color: true}},
		nil, "Health",
		tabular(withHolders(nodeSel, "cluster_name, node, gpu_id", false))))
}
