package simulate

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// GPUState is what one GPU reports beyond utilization and memory: power,
// temperatures, clocks, clock event (throttle) reasons, memory errors and
// Xid events. Every field is optional; a GPU left out, or a field left
// unset, reports a healthy GPU of the scenario's model under its load.
type GPUState struct {
	PowerWatts        *float64 `yaml:"powerWatts"`
	PowerLimitWatts   *float64 `yaml:"powerLimitWatts"`
	Temperature       *int     `yaml:"temperature"`
	MemoryTemperature *int     `yaml:"memoryTemperature"`
	SMClockMHz        *int     `yaml:"smClockMHz"`
	MemClockMHz       *int     `yaml:"memClockMHz"`
	SMMaxClockMHz     *int     `yaml:"smMaxClockMHz"`
	MemMaxClockMHz    *int     `yaml:"memMaxClockMHz"`
	// ClockEvents are the active clock event reasons by name, such as
	// sw_thermal_slowdown; the time spent in each grows while it is set.
	ClockEvents  []string      `yaml:"clockEvents"`
	ECC          *ECCCounts    `yaml:"ecc"`
	RemappedRows *RemappedRows `yaml:"remappedRows"`
	Xid          []XidEvent    `yaml:"xid"`
}

// ECCCounts are a GPU's ECC error counts; volatile ones count since the
// last driver load, aggregate ones over the GPU's life.
type ECCCounts struct {
	CorrectedVolatile    int64 `yaml:"correctedVolatile"`
	CorrectedAggregate   int64 `yaml:"correctedAggregate"`
	UncorrectedVolatile  int64 `yaml:"uncorrectedVolatile"`
	UncorrectedAggregate int64 `yaml:"uncorrectedAggregate"`
}

// RemappedRows is a GPU's row-remapping state (Ampere and newer).
type RemappedRows struct {
	Correctable   int  `yaml:"correctable"`
	Uncorrectable int  `yaml:"uncorrectable"`
	Pending       bool `yaml:"pending"`
	Failed        bool `yaml:"failed"`
}

// XidEvent is an Xid error the simulated driver reports After the node
// started, on the GPU or, with Instance set, on one of its MIG instances.
type XidEvent struct {
	After    Duration `yaml:"after"`
	Code     int      `yaml:"code"`
	Instance *int     `yaml:"instance"`
	// Lost makes the GPU fall off the bus with this Xid, as a real Xid 79
	// does: once the event is delivered, every call on the GPU and its
	// instances answers GPU_IS_LOST, and so does every wait of an event
	// set holding it.
	Lost bool `yaml:"lost"`
}

// maxXidAfter bounds an Xid's offset: a day is longer than any test or
// demonstration runs.
const maxXidAfter = 24 * time.Hour

// validateGPUState checks the gpuState section: existing GPUs, physical
// ranges, known clock event reasons, consistent counters.
func (s *Scenario) validateGPUState(bad func(path, format string, args ...any)) {
	for _, g := range slices.Sorted(maps.Keys(s.GPUState)) {
		path := fmt.Sprintf("gpuState.%d", g)
		if g < 0 || g >= s.GPUs {
			bad(path, "GPU %d does not exist (the node has %d)", g, s.GPUs)
			continue
		}
		st := s.GPUState[g]
		// Written so that NaN fails the comparison and is refused.
		watts := func(field string, v *float64, lo float64) {
			if v != nil && !(*v >= lo && *v <= 2000) {
				bad(path+"."+field, "%v is out of range %v-2000 W", *v, lo)
			}
		}
		watts("powerWatts", st.PowerWatts, 0)
		watts("powerLimitWatts", st.PowerLimitWatts, 1)
		ranged := func(field string, v *int, lo, hi int, unit string) {
			if v != nil && (*v < lo || *v > hi) {
				bad(path+"."+field, "%d is out of range %d-%d %s", *v, lo, hi, unit)
			}
		}
		ranged("temperature", st.Temperature, 0, 150, "C")
		ranged("memoryTemperature", st.MemoryTemperature, 0, 150, "C")
		ranged("smClockMHz", st.SMClockMHz, 1, 10000, "MHz")
		ranged("memClockMHz", st.MemClockMHz, 1, 10000, "MHz")
		ranged("smMaxClockMHz", st.SMMaxClockMHz, 1, 10000, "MHz")
		ranged("memMaxClockMHz", st.MemMaxClockMHz, 1, 10000, "MHz")
		if st.SMClockMHz != nil && st.SMMaxClockMHz != nil && *st.SMClockMHz > *st.SMMaxClockMHz {
			bad(path+".smClockMHz", "%d is above smMaxClockMHz %d", *st.SMClockMHz, *st.SMMaxClockMHz)
		}
		if st.MemClockMHz != nil && st.MemMaxClockMHz != nil && *st.MemClockMHz > *st.MemMaxClockMHz {
			bad(path+".memClockMHz", "%d is above memMaxClockMHz %d", *st.MemClockMHz, *st.MemMaxClockMHz)
		}
		for k, name := range st.ClockEvents {
			at := fmt.Sprintf("%s.clockEvents[%d]", path, k)
			if clockEventBit(name) == 0 {
				bad(at, "unknown reason %q (known: %s)", name, clockEventNames())
			} else if slices.Index(st.ClockEvents, name) < k {
				bad(at, "%q listed twice", name)
			}
		}
		if e := st.ECC; e != nil {
			if e.CorrectedVolatile < 0 || e.CorrectedAggregate < 0 || e.UncorrectedVolatile < 0 || e.UncorrectedAggregate < 0 {
				bad(path+".ecc", "counts cannot be negative")
			}
			if e.CorrectedAggregate < e.CorrectedVolatile || e.UncorrectedAggregate < e.UncorrectedVolatile {
				bad(path+".ecc", "an aggregate count includes the volatile one: it cannot be smaller")
			}
		}
		if r := st.RemappedRows; r != nil && (r.Correctable < 0 || r.Uncorrectable < 0) {
			bad(path+".remappedRows", "counts cannot be negative")
		}
		for k, x := range st.Xid {
			at := fmt.Sprintf("%s.xid[%d]", path, k)
			if x.After < 0 || time.Duration(x.After) > maxXidAfter {
				bad(at+".after", "%v is out of range 0-%v", time.Duration(x.After), maxXidAfter)
			}
			if x.Code < 1 || x.Code > 65535 {
				bad(at+".code", "%d is not an Xid code (1-65535)", x.Code)
			}
			if x.Instance != nil && (*x.Instance < 0 || *x.Instance >= len(s.MIG[g])) {
				bad(at+".instance", "GPU %d has %d MIG instances", g, len(s.MIG[g]))
			}
			if x.Lost && x.Instance != nil {
				bad(at+".lost", "a MIG instance does not fall off the bus alone: lose the whole GPU")
			}
		}
	}
}

// clockEventBit is the NVML bit of a clock event reason, 0 if unknown.
func clockEventBit(name string) uint64 {
	for _, r := range nvml.ClockEventReasons {
		if r.Name == name {
			return r.Bit
		}
	}
	return 0
}

func clockEventNames() string {
	out := ""
	for k, r := range nvml.ClockEventReasons {
		if k > 0 {
			out += ", "
		}
		out += r.Name
	}
	return out
}
