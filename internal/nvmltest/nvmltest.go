// Package nvmltest fills go-nvml's mock devices with the telemetry, health
// and event calls the sampler makes, for the tests and the simulated node:
// the mocks panic on any method left unset. It is never linked into the
// exporter binary.
package nvmltest

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// Profile is what a mock GPU reports. A nil pointer field or a false Has
// flag makes the call answer NOT_SUPPORTED.
type Profile struct {
	PowerMilliwatts, PowerLimitMilliwatts *uint32
	// EnergyMillijoules is read on every call, so a test can move it.
	EnergyMillijoules       func() uint64
	TempGPU                 *uint32
	TempMemory              *uint32
	SMClockMHz, MemClockMHz *uint32
	SMMaxMHz, MemMaxMHz     *uint32
	ClockEvents             *uint64
	// ClockEventNanos is the cumulative time per clock event field ID.
	ClockEventNanos map[uint32]uint64
	MemoryUtil      *uint32
	Encoder         *uint32
	Decoder         *uint32
	PCIeReplays     *int
	// ECC is corrected/uncorrected x volatile/aggregate; nil: ECC disabled.
	ECC            *[2][2]uint64
	RemappedRows   *[2]int
	RemapPending   bool
	RemapFailed    bool
	RetiredPages   *[2]int
	RecoveryAction *uint32
	// Events is the supported event mask; 0: no events.
	Events uint64
	// Driver is the driver branch answering, such as 550; 0 is the newest.
	// Fields newer than the branch answer as an older driver answers a
	// field ID it does not know (see FieldSince).
	Driver int
	// Calls, when set, counts every call Apply's functions answer, so a
	// benchmark can tell NVML calls per device and poll.
	Calls *atomic.Uint64
}

func (p *Profile) hit() {
	if p.Calls != nil {
		p.Calls.Add(1)
	}
}

// U32, U64 and Int return pointers for Profile fields.
func U32(v uint32) *uint32 { return &v }

// U64 returns a pointer to v.
func U64(v uint64) *uint64 { return &v }

// Int returns a pointer to v.
func Int(v int) *int { return &v }

const unsupported = gonvml.ERROR_NOT_SUPPORTED

func u32(p *uint32) (uint32, gonvml.Return) {
	if p == nil {
		return 0, unsupported
	}
	return *p, gonvml.SUCCESS
}

// Apply sets every telemetry, health and event call of d from p; calls a
// test already set are kept.
func Apply(d *mock.Device, p Profile) {
	if d.GetPowerUsageFunc == nil {
		d.GetPowerUsageFunc = func() (uint32, gonvml.Return) { p.hit(); return u32(p.PowerMilliwatts) }
	}
	if d.GetEnforcedPowerLimitFunc == nil {
		d.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { p.hit(); return u32(p.PowerLimitMilliwatts) }
	}
	if d.GetTotalEnergyConsumptionFunc == nil {
		d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) {
			p.hit()
			if p.EnergyMillijoules == nil {
				return 0, unsupported
			}
			return p.EnergyMillijoules(), gonvml.SUCCESS
		}
	}
	if d.GetTemperatureFunc == nil {
		d.GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { p.hit(); return u32(p.TempGPU) }
	}
	if d.GetClockInfoFunc == nil {
		d.GetClockInfoFunc = func(c gonvml.ClockType) (uint32, gonvml.Return) {
			p.hit()
			if c == gonvml.CLOCK_MEM {
				return u32(p.MemClockMHz)
			}
			return u32(p.SMClockMHz)
		}
	}
	if d.GetMaxClockInfoFunc == nil {
		d.GetMaxClockInfoFunc = func(c gonvml.ClockType) (uint32, gonvml.Return) {
			p.hit()
			if c == gonvml.CLOCK_MEM {
				return u32(p.MemMaxMHz)
			}
			return u32(p.SMMaxMHz)
		}
	}
	if d.GetCurrentClocksEventReasonsFunc == nil {
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) {
			p.hit()
			if p.ClockEvents == nil {
				return 0, unsupported
			}
			return *p.ClockEvents, gonvml.SUCCESS
		}
	}
	if d.GetSamplesFunc == nil {
		d.GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			p.hit()
			return 0, nil, unsupported
		}
	}
	if d.GetUtilizationRatesFunc == nil {
		d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
			p.hit()
			if p.MemoryUtil == nil {
				return gonvml.Utilization{}, unsupported
			}
			return gonvml.Utilization{Memory: *p.MemoryUtil}, gonvml.SUCCESS
		}
	}
	if d.GetEncoderUtilizationFunc == nil {
		d.GetEncoderUtilizationFunc = func() (uint32, uint32, gonvml.Return) { p.hit(); v, r := u32(p.Encoder); return v, 0, r }
	}
	if d.GetDecoderUtilizationFunc == nil {
		d.GetDecoderUtilizationFunc = func() (uint32, uint32, gonvml.Return) { p.hit(); v, r := u32(p.Decoder); return v, 0, r }
	}
	if d.GetPcieReplayCounterFunc == nil {
		d.GetPcieReplayCounterFunc = func() (int, gonvml.Return) {
			p.hit()
			if p.PCIeReplays == nil {
				return 0, unsupported
			}
			return *p.PCIeReplays, gonvml.SUCCESS
		}
	}
	if d.GetFieldValuesFunc == nil {
		d.GetFieldValuesFunc = func(v []gonvml.FieldValue) gonvml.Return { p.hit(); fields(p, v); return gonvml.SUCCESS }
	}
	if d.GetEccModeFunc == nil {
		d.GetEccModeFunc = func() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) {
			p.hit()
			if p.ECC == nil {
				return gonvml.FEATURE_DISABLED, gonvml.FEATURE_DISABLED, gonvml.SUCCESS
			}
			return gonvml.FEATURE_ENABLED, gonvml.FEATURE_ENABLED, gonvml.SUCCESS
		}
	}
	if d.GetTotalEccErrorsFunc == nil {
		d.GetTotalEccErrorsFunc = func(e gonvml.MemoryErrorType, c gonvml.EccCounterType) (uint64, gonvml.Return) {
			p.hit()
			if p.ECC == nil || e > 1 || c > 1 {
				return 0, unsupported
			}
			return p.ECC[e][c], gonvml.SUCCESS
		}
	}
	if d.GetRemappedRowsFunc == nil {
		d.GetRemappedRowsFunc = func() (int, int, bool, bool, gonvml.Return) {
			p.hit()
			if p.RemappedRows == nil {
				return 0, 0, false, false, unsupported
			}
			return p.RemappedRows[0], p.RemappedRows[1], p.RemapPending, p.RemapFailed, gonvml.SUCCESS
		}
	}
	if d.GetRetiredPages_v2Func == nil {
		d.GetRetiredPages_v2Func = func(c gonvml.PageRetirementCause) ([]uint64, []uint64, gonvml.Return) {
			p.hit()
			if p.RetiredPages == nil || c > 1 {
				return nil, nil, unsupported
			}
			return make([]uint64, p.RetiredPages[c]), make([]uint64, p.RetiredPages[c]), gonvml.SUCCESS
		}
	}
	if d.GetRetiredPagesPendingStatusFunc == nil {
		d.GetRetiredPagesPendingStatusFunc = func() (gonvml.EnableState, gonvml.Return) {
			p.hit()
			if p.RetiredPages == nil {
				return 0, unsupported
			}
			return gonvml.FEATURE_DISABLED, gonvml.SUCCESS
		}
	}
	if d.GetSupportedEventTypesFunc == nil {
		d.GetSupportedEventTypesFunc = func() (uint64, gonvml.Return) {
			p.hit()
			if p.Events == 0 {
				return 0, unsupported
			}
			return p.Events, gonvml.SUCCESS
		}
	}
	if d.RegisterEventsFunc == nil {
		d.RegisterEventsFunc = func(uint64, gonvml.EventSet) gonvml.Return { p.hit(); return gonvml.SUCCESS }
	}
}

// FieldSince is the first driver branch whose NVML knows a field ID the
// sampler reads: the field's first nvml.h (go-nvml's header history) is the
// one of CUDA 12.8 (R570) for the recovery action and CUDA 13.0 (R580) for
// the thermal and power-brake clock event times. Fields not listed are
// older than R535.
var FieldSince = map[uint32]int{
	gonvml.FI_DEV_GET_GPU_RECOVERY_ACTION:                     570,
	gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN:       580,
	gonvml.FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN:       580,
	gonvml.FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: 580,
}

// UnknownField is how a driver answers a field ID newer than itself. The
// header does not say; INVALID_ARGUMENT is what an NVML bounded by its own
// NVML_FI_MAX gives, and the sampler must take any error the same way.
const UnknownField = gonvml.ERROR_INVALID_ARGUMENT

// Knows reports whether driver branch driver (0: the newest) has field id.
func Knows(driver int, id uint32) bool {
	since, ok := FieldSince[id]
	return !ok || driver == 0 || driver >= since
}

// fields answers a GetFieldValues call from p.
func fields(p Profile, v []gonvml.FieldValue) {
	for i := range v {
		f := &v[i]
		f.NvmlReturn = uint32(unsupported)
		if !Knows(p.Driver, f.FieldId) {
			f.NvmlReturn = uint32(UnknownField)
			continue
		}
		switch f.FieldId {
		case gonvml.FI_DEV_MEMORY_TEMP:
			if p.TempMemory != nil {
				PutU64(f, uint64(*p.TempMemory))
			}
		case gonvml.FI_DEV_GET_GPU_RECOVERY_ACTION:
			if p.RecoveryAction != nil {
				PutU64(f, uint64(*p.RecoveryAction))
			}
		default:
			if ns, ok := p.ClockEventNanos[f.FieldId]; ok {
				PutU64(f, ns)
			}
		}
	}
}

// PutU64 answers a field value with v, as the driver does: the C union in
// the host's byte order.
func PutU64(f *gonvml.FieldValue, v uint64) {
	f.NvmlReturn = uint32(gonvml.SUCCESS)
	f.ValueType = uint32(gonvml.VALUE_TYPE_UNSIGNED_LONG_LONG)
	binary.NativeEndian.PutUint64(f.Value[:], v)
}

// NoEvents makes lib's event set creation fail as on a driver without it.
func NoEvents(lib *mock.Interface) {
	lib.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) { return nil, unsupported }
}

// EnergyCounter is a moving energy counter for Profile.EnergyMillijoules.
type EnergyCounter struct {
	mu sync.Mutex
	mj uint64
}

// Add moves the counter; a negative delta models a driver reload.
func (c *EnergyCounter) Add(delta int64) {
	c.mu.Lock()
	c.mj = uint64(max(0, int64(c.mj)+delta))
	c.mu.Unlock()
}

// Set puts the counter at mj.
func (c *EnergyCounter) Set(mj uint64) {
	c.mu.Lock()
	c.mj = mj
	c.mu.Unlock()
}

// Read returns the counter.
func (c *EnergyCounter) Read() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mj
}
