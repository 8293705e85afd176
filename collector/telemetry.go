package collector

import (
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// gauge is a Value family's sample.
func gauge(v nvml.Value) (float64, bool) { return v.V, v.OK }

// pairs emits one sample per (value, label) pair that is present.
func pairs(emit func(float64, ...string), vs []nvml.Value, labels ...string) {
	for i, v := range vs {
		if v.OK {
			emit(v.V, labels[i])
		}
	}
}

// telemetryFamilies are a whole GPU's power, energy, temperatures, clocks
// and engine utilization (--collector.telemetry). They are device values:
// a shared GPU's power is never copied onto its holders.
var telemetryFamilies = []Family[nvml.Reading]{
	{
		Name:  Prefix + "_power_usage_watts",
		Help:  "Power drawn by the GPU in watts (NVML GetPowerUsage).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.PowerWatts) },
	},
	{
		Name:  Prefix + "_power_limit_watts",
		Help:  "Power limit the GPU enforces in watts (NVML GetEnforcedPowerLimit).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.PowerLimitWatts) },
	},
	{
		Name:  Prefix + "_energy_joules_total",
		Help:  "Energy the GPU consumed in joules since the driver was loaded (NVML GetTotalEnergyConsumption), with counts from before a driver reload the exporter saw added on top; Volta and newer.",
		Type:  prometheus.CounterValue,
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.EnergyJoules) },
	},
	{
		Name:   Prefix + "_temperature_celsius",
		Help:   "Temperature of the GPU die (sensor gpu, NVML GetTemperature) and of its memory (sensor memory, field FI_DEV_MEMORY_TEMP, HBM boards) in degrees Celsius.",
		Labels: []string{"sensor"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			pairs(emit, []nvml.Value{d.Telemetry.TempGPU, d.Telemetry.TempMemory}, "gpu", "memory")
		},
	},
	{
		Name:   Prefix + "_clock_hertz",
		Help:   "Current SM and memory clocks in hertz (NVML GetClockInfo).",
		Labels: []string{"clock"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			pairs(emit, []nvml.Value{d.Telemetry.SMClockHz, d.Telemetry.MemClockHz}, "sm", "memory")
		},
	},
	{
		Name:   Prefix + "_clock_max_hertz",
		Help:   "Maximum SM and memory clocks in hertz (NVML GetMaxClockInfo).",
		Labels: []string{"clock"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			pairs(emit, []nvml.Value{d.Telemetry.SMClockMaxHz, d.Telemetry.MemClockMaxHz}, "sm", "memory")
		},
	},
	{
		Name:   Prefix + "_clock_event_active",
		Help:   "1 while the clock event (throttle) reason holds the GPU's clocks down, else 0 (NVML GetCurrentClocksEventReasons).",
		Labels: []string{"reason"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			if !d.Telemetry.HasClockEvent {
				return
			}
			for _, r := range nvml.ClockEventReasons {
				emit(b2f(d.Telemetry.ClockEvents&r.Bit != 0), r.Name)
			}
		},
	},
	{
		Name:   Prefix + "_clock_event_seconds_total",
		Help:   "Time the GPU's clocks spent held down per reason, in seconds (NVML fields FI_DEV_CLOCKS_EVENT_REASON_*, where the driver keeps them).",
		Type:   prometheus.CounterValue,
		Labels: []string{"reason"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			for i, v := range d.Telemetry.ClockEventSeconds {
				if v.OK {
					emit(v.V, nvml.ClockEventReasons[i].Name)
				}
			}
		},
	},
	{
		Name:  Prefix + "_memory_bandwidth_utilization_ratio",
		Help:  "Fraction of time (0-1) the memory controller was busy over the duty-cycle window (NVML GetSamples MEMORY_UTILIZATION_SAMPLES, else GetUtilizationRates): the memory-bound half of saturation.",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.MemoryBandwidth) },
	},
	{
		Name:  Prefix + "_encoder_utilization_ratio",
		Help:  "Video encoder utilization, 0-1 (NVML GetEncoderUtilization).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.Encoder) },
	},
	{
		Name:  Prefix + "_decoder_utilization_ratio",
		Help:  "Video decoder utilization, 0-1 (NVML GetDecoderUtilization).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.Decoder) },
	},
	{
		Name:  Prefix + "_pcie_replay_errors_total",
		Help:  "PCIe replays of the GPU's link since the driver loaded (NVML GetPcieReplayCounter).",
		Type:  prometheus.CounterValue,
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Telemetry.PCIeReplays) },
	},
}

// recoveryActions are NVML's nvmlDeviceGpuRecoveryAction_t values by
// number (nvml.h: 5 since CUDA 12.9, R575; 6 and 7 since CUDA 13.3); a value
// newer than this list is "other".
var recoveryActions = []string{"none", "gpu_reset", "node_reboot", "drain_p2p", "drain_and_reset", "recover_imex_domain", "bus_reset", "system_reboot"}

// healthFamilies are a whole GPU's memory error and recovery state
// (--collector.health).
var healthFamilies = []Family[nvml.Reading]{
	{
		Name:   Prefix + "_ecc_errors_total",
		Help:   "ECC errors of the GPU's memory by error_type (corrected, uncorrected) and counter_type (volatile: since the driver loaded; aggregate: over the GPU's life) (NVML GetTotalEccErrors; only while ECC is enabled).",
		Type:   prometheus.CounterValue,
		Labels: []string{"error_type", "counter_type"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			for e, et := range []string{"corrected", "uncorrected"} {
				for c, ct := range []string{"volatile", "aggregate"} {
					if v := d.Health.ECC[e][c]; v.OK {
						emit(v.V, et, ct)
					}
				}
			}
		},
	},
	{
		Name:   Prefix + "_retired_pages",
		Help:   "Memory pages retired for multiple single-bit or a double-bit ECC error (NVML GetRetiredPages_v2; before Ampere).",
		Labels: []string{"cause"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			pairs(emit, d.Health.RetiredPages[:], "multiple_single_bit", "double_bit")
		},
	},
	{
		Name:  Prefix + "_retired_pages_pending",
		Help:  "1 while a page retirement waits for the next driver load (NVML GetRetiredPagesPendingStatus; before Ampere).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Health.RetiredPending) },
	},
	{
		Name:   Prefix + "_remapped_rows",
		Help:   "Memory rows remapped after correctable or uncorrectable errors (NVML GetRemappedRows; Ampere and newer).",
		Labels: []string{"error_type"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			pairs(emit, d.Health.RemappedRows[:], "correctable", "uncorrectable")
		},
	},
	{
		Name:  Prefix + "_row_remap_pending",
		Help:  "1 while a row remap waits for a GPU reset (NVML GetRemappedRows).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Health.RemapPending) },
	},
	{
		Name:  Prefix + "_row_remap_failed",
		Help:  "1 when a row remap failed: the GPU needs service (NVML GetRemappedRows).",
		Value: func(d *nvml.Reading) (float64, bool) { return gauge(d.Health.RemapFailed) },
	},
	{
		Name:   Prefix + "_recovery_action",
		Help:   "1 for the recovery action the driver asks for (field FI_DEV_GET_GPU_RECOVERY_ACTION, R570 and newer): none, gpu_reset, node_reboot, drain_p2p, drain_and_reset, recover_imex_domain, bus_reset, system_reboot, or other for a value newer than the exporter.",
		Labels: []string{"action"},
		Each: func(d *nvml.Reading, emit func(float64, ...string)) {
			if v := d.Health.RecoveryAction; v.OK {
				emit(1, recoveryActionName(v.V))
			}
		},
	},
}

func recoveryActionName(v float64) string {
	if i := int(v); i >= 0 && i < len(recoveryActions) && float64(i) == v {
		return recoveryActions[i]
	}
	return "other"
}

// eventFamilies count a GPU's Xid events (--collector.events).
var eventFamilies = []Family[nvml.Reading]{{
	Name:   Prefix + "_xid_errors_total",
	Help:   "Xid errors the driver reported for the device since the exporter started, by Xid code (NVML events XidCriticalError; double-bit ECC errors as Xid 48).",
	Type:   prometheus.CounterValue,
	Labels: []string{"xid"},
	Each: func(d *nvml.Reading, emit func(float64, ...string)) {
		for _, code := range sortedCodes(d.Xid) {
			emit(float64(d.Xid[code]), xidLabel(code))
		}
	},
}}

// supportFamilies say which reading groups each GPU supports, so that an
// absent series can be told from a missing one.
var supportFamilies = []Family[nvml.Reading]{{
	Name:   Prefix + "_family_supported",
	Help:   "1 when the GPU answers the reading group (family) and its collector is on, 0 when NVML answered NOT_SUPPORTED (asked again at the next rediscovery) or the collector is off: such series are absent, never 0.",
	Labels: []string{"family"},
	Each: func(d *nvml.Reading, emit func(float64, ...string)) {
		if d.IsMIG() {
			return
		}
		for i, name := range nvml.FamilyNames {
			emit(b2f(d.Supported&(1<<i) != 0), name)
		}
	},
}}

func xidLabel(code uint64) string {
	if code == nvml.OtherXid {
		return "other"
	}
	return strconv.FormatUint(code, 10)
}

// exceptionValues are the per-device families whose usual value carries
// no information on a healthy node, by the value they are served with under
// Config.ExceptionsOnly: 18 support flags that stay 1 for the node's life
// and 9 clock event reasons that are mostly 0 make 27 of a GPU's series.
// Queries that compare them with that value (== 0, == 1) answer the same
// either way.
var exceptionValues = map[string]float64{
	Prefix + "_family_supported":   0,
	Prefix + "_clock_event_active": 1,
}

// onlyExceptions returns fams with each family of exceptionValues emitting
// only its samples of that value.
func onlyExceptions(fams []Family[nvml.Reading]) []Family[nvml.Reading] {
	out := slices.Clone(fams)
	for i, f := range out {
		want, ok := exceptionValues[f.Name]
		if !ok {
			continue
		}
		each := f.Each
		out[i].Each = func(d *nvml.Reading, emit func(float64, ...string)) {
			each(d, func(v float64, lv ...string) {
				if v == want {
					emit(v, lv...)
				}
			})
		}
	}
	return out
}
