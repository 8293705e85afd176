package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// profilingValue is a device family of one GPM metric.
func profilingValue(i int) func(d *nvml.Reading) (float64, bool) {
	return func(d *nvml.Reading) (float64, bool) {
		if i >= len(d.Profiling) {
			return 0, false
		}
		return gauge(d.Profiling[i])
	}
}

// profilingDirections emits a metric pair (tx, rx) as one family.
func profilingDirections(tx, rx int) func(*nvml.Reading, func(float64, ...string)) {
	return func(d *nvml.Reading, emit func(float64, ...string)) {
		if len(d.Profiling) > max(tx, rx) {
			pairs(emit, []nvml.Value{d.Profiling[tx], d.Profiling[rx]}, "tx", "rx")
		}
	}
}

// profilingFamilies are GPM readings of GPUs and MIG instances on Hopper
// and newer (--collector.profiling), averaged over the duty-cycle window.
var profilingFamilies = []Family[nvml.Reading]{
	{Name: Prefix + "_sm_active_ratio", Help: "Fraction of time (0-1) at least one warp was resident on an SM, averaged over SMs and the duty-cycle window (GPM_METRIC_SM_UTIL; Hopper and newer).", Value: profilingValue(0)},
	{Name: Prefix + "_sm_occupancy_ratio", Help: "Resident warps as a fraction (0-1) of the SMs' maximum, averaged over the duty-cycle window (GPM_METRIC_SM_OCCUPANCY).", Value: profilingValue(1)},
	{Name: Prefix + "_tensor_active_ratio", Help: "Fraction of time (0-1) any tensor core pipe was active (GPM_METRIC_ANY_TENSOR_UTIL).", Value: profilingValue(2)},
	{Name: Prefix + "_dram_active_ratio", Help: "Fraction (0-1) of the peak DRAM bandwidth in use (GPM_METRIC_DRAM_BW_UTIL).", Value: profilingValue(3)},
	{Name: Prefix + "_fp16_active_ratio", Help: "Fraction of time (0-1) the FP16 pipes were active (GPM_METRIC_FP16_UTIL).", Value: profilingValue(4)},
	{Name: Prefix + "_fp32_active_ratio", Help: "Fraction of time (0-1) the FP32 pipes were active (GPM_METRIC_FP32_UTIL).", Value: profilingValue(5)},
	{Name: Prefix + "_fp64_active_ratio", Help: "Fraction of time (0-1) the FP64 pipes were active (GPM_METRIC_FP64_UTIL).", Value: profilingValue(6)},
	{Name: Prefix + "_pcie_bandwidth_bytes_per_second", Help: "PCIe traffic of the GPU in bytes per second, direction tx (from the GPU) or rx (GPM_METRIC_PCIE_TX/RX_PER_SEC).", Labels: []string{"direction"}, Each: profilingDirections(7, 8)},
	{Name: Prefix + "_nvlink_bandwidth_bytes_per_second", Help: "NVLink traffic of the GPU in bytes per second over all links, direction tx or rx (GPM_METRIC_NVLINK_TOTAL_TX/RX_PER_SEC).", Labels: []string{"direction"}, Each: profilingDirections(9, 10)},
}

// containerShare scales a device's GPM value by the container's share of
// the device: all of it when the container holds the device (or MIG
// instance) alone, its part of the per-process SM time when it shares it.
// Without a share (shared, no per-process data) there is no value: the
// device's is never copied onto each sharer.
func containerShare(i int) func(u *Usage) (float64, bool) {
	return func(u *Usage) (float64, bool) {
		d := u.Device
		if !u.HasShare || i >= len(d.Profiling) || !d.Profiling[i].OK {
			return 0, false
		}
		return d.Profiling[i].V * u.Share, true
	}
}

// containerProfilingFamilies are the GPM readings per container.
var containerProfilingFamilies = []Family[Usage]{
	{Name: Prefix + "_container_sm_active_ratio", Help: "The device's SM activity (0-1, see kube_gpu_sm_active_ratio) times the container's share of it: all on an exclusive GPU or MIG instance, its part of the per-process SM time on a shared GPU, so sharers add up to the device.", Value: containerShare(nvml.ProfSMActive)},
	{Name: Prefix + "_container_sm_occupancy_ratio", Help: "The device's SM occupancy (0-1) times the container's share of the device, as for kube_gpu_container_sm_active_ratio.", Value: containerShare(nvml.ProfSMOccupancy)},
	{Name: Prefix + "_container_tensor_active_ratio", Help: "The device's tensor core activity (0-1) times the container's share of the device.", Value: containerShare(nvml.ProfTensorActive)},
	{Name: Prefix + "_container_dram_active_ratio", Help: "The device's DRAM bandwidth use (0-1) times the container's share of the device.", Value: containerShare(nvml.ProfDRAMActive)},
}
