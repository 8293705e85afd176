package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// DeviceTaint is one taint on a GPU device of this node's ResourceSlices
// (KEP-5055), with the NVML device it names; GPU is nil when the slice
// gives no uuid attribute or NVML does not see it.
type DeviceTaint struct {
	kube.DRADeviceTaint
	GPU *nvml.Reading
}

// draTaints resolves the specs' device taints to NVML devices.
func draTaints(in Inputs, ix *deviceIndex) []DeviceTaint {
	if in.Specs == nil || len(in.Specs.DRATaints) == 0 {
		return nil
	}
	out := make([]DeviceTaint, len(in.Specs.DRATaints))
	for i, t := range in.Specs.DRATaints {
		out[i] = DeviceTaint{DRADeviceTaint: t, GPU: ix.byUUID[t.UUID]}
	}
	return out
}

func deviceTaintValues(node string) func([]string, *DeviceTaint) []string {
	return func(b []string, t *DeviceTaint) []string {
		uuid, model := t.UUID, ""
		if t.GPU != nil {
			model = t.GPU.Name
		}
		return append(b, node, uuid, model, kube.DRAVendor(t.Driver))
	}
}

// deviceTaintFamilies are read for every taint on a GPU device of the
// node's ResourceSlices.
var deviceTaintFamilies = []Family[DeviceTaint]{{
	Name: Prefix + "_dra_device_taint",
	Help: "1 per taint on a GPU device this node's ResourceSlices publish (DRA device taints): key, value and effect " +
		"(None, NoSchedule, NoExecute), the device as its driver names it, and rule, the DeviceTaintRule that put it there " +
		"(empty for a taint the driver set in the slice).",
	Labels: []string{"driver", "pool", "device", "key", "value", "effect", "rule"},
	Each: func(t *DeviceTaint, emit func(float64, ...string)) {
		emit(1, t.Driver, t.Pool, t.Device, t.Key, t.Value, t.Effect, t.Rule)
	},
}}
