package nvml

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Value is one optional reading: OK is false when the device does not
// support it or the read failed, and the reading is then absent, never 0.
type Value struct {
	V  float64
	OK bool
}

func val(v float64) Value { return Value{V: v, OK: true} }

// Clock event (throttle) reasons, in the order of their NVML bits; the
// names are the reason label values.
var ClockEventReasons = []struct {
	Name string
	Bit  uint64
	// Field is the NVML field with the cumulative time (ns) spent in the
	// reason, 0 where NVML keeps none.
	Field uint32
}{
	{"gpu_idle", gonvml.ClocksEventReasonGpuIdle, 0},
	{"applications_clocks_setting", gonvml.ClocksEventReasonApplicationsClocksSetting, 0},
	{"sw_power_cap", gonvml.ClocksEventReasonSwPowerCap, gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP},
	{"hw_slowdown", gonvml.ClocksThrottleReasonHwSlowdown, 0},
	{"sync_boost", gonvml.ClocksEventReasonSyncBoost, gonvml.FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST},
	{"sw_thermal_slowdown", gonvml.ClocksEventReasonSwThermalSlowdown, gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN},
	{"hw_thermal_slowdown", gonvml.ClocksThrottleReasonHwThermalSlowdown, gonvml.FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN},
	{"hw_power_brake_slowdown", gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown, gonvml.FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN},
	{"display_clock_setting", gonvml.ClocksEventReasonDisplayClockSetting, 0},
}

// Telemetry is a whole GPU's power, energy, temperature, clocks and
// engine utilization. MIG instances have none: NVML reports these for the
// physical GPU.
type Telemetry struct {
	PowerWatts, PowerLimitWatts Value
	// EnergyJoules is the driver's counter (energy since the driver was
	// loaded), with every earlier count the exporter saw before a driver
	// reload restarted it added on top.
	EnergyJoules                Value
	TempGPU, TempMemory         Value // degrees Celsius
	SMClockHz, MemClockHz       Value
	SMClockMaxHz, MemClockMaxHz Value
	// ClockEvents is the bit set of active clock event reasons.
	ClockEvents   uint64
	HasClockEvent bool
	// ClockEventSeconds is the cumulative time per reason of
	// ClockEventReasons, where NVML keeps it.
	ClockEventSeconds []Value
	// MemoryBandwidth is the mean memory-controller utilization over the
	// duty-cycle window, 0-1.
	MemoryBandwidth  Value
	Encoder, Decoder Value // 0-1
	PCIeReplays      Value
}

// Health is a whole GPU's memory error and recovery state.
type Health struct {
	// ECC counts errors by [corrected, uncorrected][volatile, aggregate];
	// OK only where ECC is enabled.
	ECC [2][2]Value
	// RetiredPages counts pages retired for [multiple single-bit,
	// double-bit] errors, pre-Ampere; RetiredPending a retirement waiting
	// for the next driver load.
	RetiredPages   [2]Value
	RetiredPending Value
	// RemappedRows counts [correctable, uncorrectable] remapped rows,
	// Ampere and newer; RemapPending and RemapFailed are 0 or 1.
	RemappedRows              [2]Value
	RemapPending, RemapFailed Value
	// RecoveryAction is NVML's gpuRecoveryAction: 0 none, 1 GPU reset,
	// 2 node reboot, 3 drain peer-to-peer, 4 drain and reset.
	RecoveryAction Value
}

// Family bits: which reading groups a device supports. A call answering
// NOT_SUPPORTED clears its bit until the next rediscovery, so it is not
// asked again every poll.
const (
	FamilyPower = 1 << iota
	FamilyPowerLimit
	FamilyEnergy
	FamilyTemperature
	FamilyMemoryTemperature
	FamilyClocks
	FamilyClockEvents
	FamilyClockEventTime
	FamilyMemoryBandwidth
	FamilyEncoder
	FamilyDecoder
	FamilyPCIeReplay
	FamilyECC
	FamilyRetiredPages
	FamilyRemappedRows
	FamilyRecoveryAction
	FamilyXid
	FamilyGPM
	familyAll = FamilyGPM<<1 - 1
)

// FamilyNames are the family label values of the support info, by bit.
var FamilyNames = []string{
	"power", "power_limit", "energy", "temperature", "memory_temperature", "clocks",
	"clock_events", "clock_event_time", "memory_bandwidth", "encoder", "decoder",
	"pcie_replay", "ecc", "retired_pages", "remapped_rows", "recovery_action", "xid_events", "gpm",
}

// telemetryState is the loop-owned state of one GPU's telemetry.
type telemetryState struct {
	supported              uint32 // Family bits not yet answered NOT_SUPPORTED
	answered               uint32 // Family bits whose field answered once
	energyBase, lastEnergy uint64 // mJ: counter restarts folded into base
	energyStarted          bool
	maxSM, maxMem          Value
	memWin                 window
	memUseRates            bool
	fields                 []gonvml.FieldValue
}

func newTelemetryState() *telemetryState {
	return &telemetryState{supported: familyAll}
}

// check records a call's result for family bit f: NOT_SUPPORTED turns the
// family off until rediscovery; other errors are counted. It reports
// whether the value may be used, and lost when the GPU fell off the bus.
func (s *Sampler) check(t *telemetryState, f uint32, ret gonvml.Return) (ok, lost bool) {
	switch ret {
	case gonvml.SUCCESS:
		return true, false
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
		t.supported &^= f
	case gonvml.ERROR_GPU_IS_LOST:
		return false, true
	default:
		s.countError(reason(ret))
	}
	return false, false
}

// checkField records the return of one field of a GetFieldValues call for
// family bit f. A driver older than a field answers its ID with an error of
// its own choosing (nvml.h names none), so until the family's field has
// answered once, any error but a lost GPU means this driver does not have
// it: the family is off until rediscovery, and nothing is counted. Once it
// has answered, errors are counted as any call's.
func (s *Sampler) checkField(t *telemetryState, f uint32, ret gonvml.Return) bool {
	switch {
	case ret == gonvml.SUCCESS:
		t.answered |= f
		return true
	case t.answered&f == 0 && ret != gonvml.ERROR_GPU_IS_LOST:
		t.supported &^= f
		return false
	}
	ok, _ := s.check(t, f, ret)
	return ok
}

// on reports whether family f is wanted and not known unsupported.
func (t *telemetryState) on(f uint32) bool { return t.supported&f != 0 }
