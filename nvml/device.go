// Package nvml reads GPU devices, their utilization and memory through
// NVML. Everything is written against go-nvml's nvml.Interface, so the real
// driver library and go-nvml's mock servers (the simulated node and the
// tests) run the same code.
package nvml

import (
	"encoding/binary"
	"math"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// DeviceInfo describes a GPU or a MIG instance; it changes only when the
// hardware or the MIG layout does.
type DeviceInfo struct {
	// UUID is NVML's UUID, "GPU-..." or "MIG-...": the gpu_id label.
	UUID string
	// Name is NVML's product name: the gpu_model label.
	Name string
	// Index and Minor are NVML's index and the /dev/nvidia<minor> number;
	// MIG instances carry their parent's.
	Index, Minor int
	// PCIBusID is the parent GPU's PCI address.
	PCIBusID string
	// MemoryTotal is in bytes.
	MemoryTotal uint64
	// ParentUUID is set for MIG instances: the GPU they are carved from.
	ParentUUID string
	// GPUInstance and ComputeInstance are the MIG IDs, -1 on whole GPUs.
	GPUInstance, ComputeInstance int
	// Profile is the MIG profile such as "1g.10gb", empty on whole GPUs.
	Profile string
	// MIGEnabled marks a physical GPU partitioned into MIG instances: its
	// instances, not the GPU, are what containers get.
	MIGEnabled bool
}

// IsMIG reports whether the device is a MIG instance.
func (d *DeviceInfo) IsMIG() bool { return d.ParentUUID != "" }

// Reading is one device's latest numbers.
type Reading struct {
	DeviceInfo
	// DutyCycle is the mean utilization over the window, 0-100; valid when HasDutyCycle.
	DutyCycle    float64
	HasDutyCycle bool
	// MemoryUsed is in bytes; valid when HasMemory.
	MemoryUsed uint64
	HasMemory  bool
	// Processes are the compute processes on the device, when the sampler
	// collects them (Config.Processes) and ProcessesOK.
	Processes []Process
	// ProcessesOK is true when per-process data was read this poll; when
	// false, ProcessesReason says why (e.g. "not_supported").
	ProcessesOK     bool
	ProcessesReason string
	// UtilReason says why the processes carry no SM utilization (HasUtil
	// false) when the list itself was read: NVML gives no per-process
	// utilization on MIG instances ("not_supported"), while their process
	// list and memory work.
	UtilReason string

	// Telemetry and Health are read on whole GPUs when the sampler's
	// Telemetry and Health switches are on.
	Telemetry Telemetry
	Health    Health
	// Xid counts the device's Xid events by code since the exporter
	// started (Events switch); LastXid is when the latest arrived.
	Xid     map[uint64]uint64
	LastXid time.Time
	// Supported has a Family bit for every reading group the device
	// answers (not NOT_SUPPORTED); 0 on MIG instances, which have none.
	Supported uint32
	// Profiling holds the GPM metrics of ProfilingMetrics, by index, on
	// Hopper and newer with the profiling switch on; nil elsewhere.
	Profiling []Value
}

// Process is one compute process on a device.
type Process struct {
	PID uint32
	// MemoryUsed is in bytes; valid when HasMemory (NVML may withhold it).
	MemoryUsed uint64
	HasMemory  bool
	// SMUtil is the process's SM utilization averaged over the duty-cycle
	// window, 0-100; polls in which NVML sampled the process but reported no
	// activity count as 0.
	SMUtil  float64
	HasUtil bool
}

// migProfile extracts "1g.10gb" from a MIG device name such as
// "NVIDIA A100-SXM4-40GB MIG 1g.10gb".
func migProfile(name string) string {
	if i := strings.LastIndex(name, "MIG "); i >= 0 {
		return strings.TrimSpace(name[i+len("MIG "):])
	}
	return ""
}

// busID turns NVML's fixed C char array into a Go string.
func busID(b [32]int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return strings.ToLower(sb.String())
}

// sampleValue decodes an NVML sample by its value type; ok is false for
// values that cannot be utilization percentages.
func sampleValue(vt gonvml.ValueType, raw [8]byte) (float64, bool) {
	v, ok := decodeValue(vt, raw)
	if !ok || v > 100 {
		return 0, false
	}
	return v, true
}

// decodeValue decodes an NVML sample or field value by its value type; ok
// is false for unknown types, NaN and negative values.
func decodeValue(vt gonvml.ValueType, raw [8]byte) (float64, bool) {
	var v float64
	switch vt {
	case gonvml.VALUE_TYPE_DOUBLE:
		v = math.Float64frombits(binary.LittleEndian.Uint64(raw[:]))
	case gonvml.VALUE_TYPE_UNSIGNED_INT:
		v = float64(binary.LittleEndian.Uint32(raw[:4]))
	case gonvml.VALUE_TYPE_UNSIGNED_LONG, gonvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		v = float64(binary.LittleEndian.Uint64(raw[:]))
	case gonvml.VALUE_TYPE_SIGNED_LONG_LONG:
		v = float64(int64(binary.LittleEndian.Uint64(raw[:])))
	case gonvml.VALUE_TYPE_SIGNED_INT:
		v = float64(int32(binary.LittleEndian.Uint32(raw[:4])))
	case gonvml.VALUE_TYPE_UNSIGNED_SHORT:
		v = float64(binary.LittleEndian.Uint16(raw[:2]))
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, false
	}
	return v, true
}

// EncodeUint32Sample builds the raw value of an unsigned-int NVML sample;
// the simulated node and tests use it to produce samples as the driver does.
func EncodeUint32Sample(v uint32) [8]byte {
	var raw [8]byte
	binary.LittleEndian.PutUint32(raw[:4], v)
	return raw
}

// reason maps an NVML return code to a short, bounded label value.
func reason(r gonvml.Return) string {
	switch r {
	case gonvml.ERROR_GPU_IS_LOST:
		return "gpu_lost"
	case gonvml.ERROR_NOT_SUPPORTED:
		return "not_supported"
	case gonvml.ERROR_NO_PERMISSION:
		return "no_permission"
	case gonvml.ERROR_TIMEOUT:
		return "timeout"
	case gonvml.ERROR_UNKNOWN:
		return "unknown"
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return "library_not_found"
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return "driver_not_loaded"
	case gonvml.ERROR_UNINITIALIZED:
		return "uninitialized"
	case gonvml.ERROR_NOT_FOUND:
		return "not_found"
	default:
		return "nvml_error"
	}
}
