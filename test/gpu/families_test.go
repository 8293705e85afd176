package gpu

import (
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// The family check compares every telemetry and health family the exporter
// serves with what nvidia-smi reads from the same driver at the same time.
// nvidia-smi reads NVML too, so on one GPU the two must agree: within the
// movement of the value between two nvidia-smi readings taken on either
// side of the scrape (the exporter's reading is at most one poll old), and
// exactly for counters and settings. A value nvidia-smi cannot give
// ("[N/A]", "[Not Supported]") must be absent from the exporter, never 0,
// and one nvidia-smi gives must be present.

// famCheck is one family compared with one nvidia-smi --query-gpu field.
type famCheck struct {
	what string
	// fields are nvidia-smi's names for the value, newest first: the first
	// one the installed nvidia-smi accepts is read.
	fields []string
	metric string
	labels map[string]string
	// scale turns the exporter's base unit into nvidia-smi's.
	scale float64
	// abs and rel widen the range the exporter must fall in, in nvidia-smi's
	// unit: abs + rel*value on either side of the readings.
	abs, rel float64
}

// famChecks lists the scalar families. poll widens the counters that move
// while the GPU works (time in a clock event reason, in microseconds).
func famChecks(poll time.Duration) []famCheck {
	pct := func(what, field, metric string) famCheck {
		return famCheck{what: what, fields: []string{field}, metric: metric, scale: 100, abs: 5}
	}
	exact := func(what, field, metric string, labels map[string]string) famCheck {
		return famCheck{what: what, fields: []string{field}, metric: metric, labels: labels, scale: 1}
	}
	checks := []famCheck{
		{what: "power draw (W)", fields: []string{"power.draw.average", "power.draw"}, metric: "kube_gpu_power_usage_watts", scale: 1, abs: 10, rel: 0.1},
		{what: "enforced power limit (W)", fields: []string{"enforced.power.limit"}, metric: "kube_gpu_power_limit_watts", scale: 1, abs: 1},
		{what: "GPU temperature (°C)", fields: []string{"temperature.gpu"}, metric: "kube_gpu_temperature_celsius", labels: map[string]string{"sensor": "gpu"}, scale: 1, abs: 2},
		{what: "memory temperature (°C)", fields: []string{"temperature.memory"}, metric: "kube_gpu_temperature_celsius", labels: map[string]string{"sensor": "memory"}, scale: 1, abs: 2},
		{what: "SM clock (MHz)", fields: []string{"clocks.sm"}, metric: "kube_gpu_clock_hertz", labels: map[string]string{"clock": "sm"}, scale: 1e-6, abs: 30, rel: 0.05},
		{what: "memory clock (MHz)", fields: []string{"clocks.mem"}, metric: "kube_gpu_clock_hertz", labels: map[string]string{"clock": "memory"}, scale: 1e-6, abs: 30, rel: 0.05},
		{what: "max SM clock (MHz)", fields: []string{"clocks.max.sm"}, metric: "kube_gpu_clock_max_hertz", labels: map[string]string{"clock": "sm"}, scale: 1e-6, abs: 1},
		{what: "max memory clock (MHz)", fields: []string{"clocks.max.mem"}, metric: "kube_gpu_clock_max_hertz", labels: map[string]string{"clock": "memory"}, scale: 1e-6, abs: 1},
		pct("memory bandwidth utilization (%)", "utilization.memory", "kube_gpu_memory_bandwidth_utilization_ratio"),
		pct("encoder utilization (%)", "utilization.encoder", "kube_gpu_encoder_utilization_ratio"),
		pct("decoder utilization (%)", "utilization.decoder", "kube_gpu_decoder_utilization_ratio"),
		exact("ECC corrected, volatile", "ecc.errors.corrected.volatile.total", "kube_gpu_ecc_errors_total", map[string]string{"error_type": "corrected", "counter_type": "volatile"}),
		exact("ECC uncorrected, volatile", "ecc.errors.uncorrected.volatile.total", "kube_gpu_ecc_errors_total", map[string]string{"error_type": "uncorrected", "counter_type": "volatile"}),
		exact("ECC corrected, aggregate", "ecc.errors.corrected.aggregate.total", "kube_gpu_ecc_errors_total", map[string]string{"error_type": "corrected", "counter_type": "aggregate"}),
		exact("ECC uncorrected, aggregate", "ecc.errors.uncorrected.aggregate.total", "kube_gpu_ecc_errors_total", map[string]string{"error_type": "uncorrected", "counter_type": "aggregate"}),
		exact("remapped rows, correctable", "remapped_rows.correctable", "kube_gpu_remapped_rows", map[string]string{"error_type": "correctable"}),
		exact("remapped rows, uncorrectable", "remapped_rows.uncorrectable", "kube_gpu_remapped_rows", map[string]string{"error_type": "uncorrectable"}),
		exact("row remap pending", "remapped_rows.pending", "kube_gpu_row_remap_pending", nil),
		exact("row remap failed", "remapped_rows.failure", "kube_gpu_row_remap_failed", nil),
	}
	for _, r := range nvml.ClockEventReasons {
		if r.Field == 0 {
			continue
		}
		checks = append(checks, famCheck{
			what:   "time in " + r.Name + " (µs)",
			fields: []string{"clocks_event_reasons_counters." + r.Name},
			metric: "kube_gpu_clock_event_seconds_total", labels: map[string]string{"reason": r.Name},
			scale: 1e6, abs: float64(poll.Microseconds()) + 1000,
		})
	}
	return checks
}

// clockEventFields are nvidia-smi's names for the active reasons' bitmask.
var clockEventFields = []string{"clocks_event_reasons.active", "clocks_throttle_reasons.active"}

// smiSnapshot is one nvidia-smi --query-gpu reading of the chosen fields.
type smiSnapshot map[string]string

// chooseFields asks nvidia-smi for each candidate name once and keeps, per
// check, the first it accepts: field names change between driver branches
// and one unknown name fails a whole query.
func chooseFields(smi func(...string) *exec.Cmd, candidates [][]string) (chosen []string, unknown map[int]string) {
	chosen = make([]string, len(candidates))
	unknown = map[int]string{}
	for i, names := range candidates {
		for _, f := range names {
			if _, err := queryCSV(smi, f); err == nil || !strings.Contains(err.Error(), "not a valid field") {
				chosen[i] = f
				break
			}
		}
		if chosen[i] == "" {
			unknown[i] = strings.Join(names, " / ")
		}
	}
	return chosen, unknown
}

func snapshot(smi func(...string) *exec.Cmd, fields []string) (smiSnapshot, error) {
	var ask []string
	for _, f := range fields {
		if f != "" {
			ask = append(ask, f)
		}
	}
	rec, err := queryCSV(smi, ask...)
	if err != nil {
		return nil, err
	}
	s := smiSnapshot{}
	for i, f := range ask {
		s[f] = rec[i]
	}
	return s, nil
}

// notAvailable is how nvidia-smi prints a value the GPU or driver lacks.
func notAvailable(v string) bool {
	v = strings.Trim(strings.TrimSpace(v), "[]")
	return strings.EqualFold(v, "N/A") || strings.EqualFold(v, "Not Supported") || strings.EqualFold(v, "Unknown Error")
}

// smiNumber reads a value, with Yes/No as 1/0 (remap pending and failure).
func smiNumber(v string) (float64, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes":
		return 1, true
	case "no":
		return 0, true
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return f, err == nil
}

// judgeScalar compares one family: before and after are the nvidia-smi
// readings taken on either side of the scrape.
func judgeScalar(c famCheck, field, before, after string, ss []series, uuid string) row {
	labels := map[string]string{"gpu_id": uuid}
	for k, v := range c.labels {
		labels[k] = v
	}
	got, err := find(ss, c.metric, labels)
	present := err == nil
	r := row{what: c.what + " · " + field, smi: before + " / " + after}
	if present {
		r.exporter = strconv.FormatFloat(got*c.scale, 'g', 6, 64)
	} else {
		r.exporter = "absent"
	}
	if notAvailable(before) || notAvailable(after) {
		r.target = "absent where nvidia-smi has no value"
		r.ok = verdict(!present)
		return r
	}
	a, okA := smiNumber(before)
	b, okB := smiNumber(after)
	if !okA || !okB {
		r.target = "nvidia-smi value unreadable: reported, not judged"
		return r
	}
	lo, hi := math.Min(a, b), math.Max(a, b)
	lo -= c.abs + c.rel*math.Abs(lo)
	hi += c.abs + c.rel*math.Abs(hi)
	r.target = fmt.Sprintf("within [%.6g, %.6g]", lo, hi)
	if !present {
		r.target += " (exporter must serve it)"
		r.ok = verdict(false)
		return r
	}
	v := got * c.scale
	r.diff = fmt.Sprintf("%+.3g", v-(a+b)/2)
	r.ok = verdict(v >= lo && v <= hi)
	return r
}

// judgeClockEvents compares the active clock event reasons on the bits that
// did not change between the two nvidia-smi readings.
func judgeClockEvents(before, after string, ss []series, uuid string) row {
	r := row{what: "clock event reasons active", smi: before + " / " + after, target: "same reasons on the bits stable across both readings"}
	a, errA := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(before), "0x"), 16, 64)
	b, errB := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(after), "0x"), 16, 64)
	if errA != nil || errB != nil {
		r.target = "nvidia-smi bitmask unreadable: reported, not judged"
		return r
	}
	var active, differ []string
	served := 0
	for _, reason := range nvml.ClockEventReasons {
		v, err := find(ss, "kube_gpu_clock_event_active", map[string]string{"gpu_id": uuid, "reason": reason.Name})
		if err != nil {
			continue
		}
		served++
		if v == 1 {
			active = append(active, reason.Name)
		}
		stable := a&reason.Bit == b&reason.Bit
		if stable && (a&reason.Bit != 0) != (v == 1) {
			differ = append(differ, reason.Name)
		}
	}
	r.exporter = "[" + strings.Join(active, " ") + "]"
	if len(differ) > 0 {
		r.diff = "differs: " + strings.Join(differ, " ")
	}
	r.ok = verdict(served == len(nvml.ClockEventReasons) && len(differ) == 0)
	return r
}
