package kube

import (
	"cmp"
	"slices"

	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/client-go/tools/cache"
)

// DRADeviceTaint is one taint on a GPU device this node's ResourceSlices
// publish (KEP-5055): set by the driver in the slice, or by a
// DeviceTaintRule that selects the device (Rule names it).
type DRADeviceTaint struct {
	DRADevice
	// UUID is the device's NVML UUID, "" when its slice gives none.
	UUID               string
	Key, Value, Effect string
	// Rule is the DeviceTaintRule's name; "" for a taint in the slice.
	Rule string
}

// DeviceTaints lists the taints of the devices of the given drivers in
// this node's ResourceSlices (newest pool generation only, as
// ResourceSliceDevices counts them): each device's own, and those of every
// DeviceTaintRule whose selector names its driver, pool and device (a
// field left out matches any). Rules are matched on these three fields
// only, as the v1 API defines them. Sorted by device, rule, key.
func DeviceTaints(list []*resourcev1.ResourceSlice, rules []*resourcev1.DeviceTaintRule, drivers []string) []DRADeviceTaint {
	var out []DRADeviceTaint
	eachCurrentDevice(list, drivers, func(dev DRADevice, d *resourcev1.Device) {
		uuid := deviceUUID(dev.Driver, d.Attributes)
		for _, t := range d.Taints {
			out = append(out, DRADeviceTaint{DRADevice: dev, UUID: uuid, Key: t.Key, Value: t.Value, Effect: string(t.Effect)})
		}
		for _, r := range rules {
			if selects(r.Spec.DeviceSelector, dev) {
				t := r.Spec.Taint
				out = append(out, DRADeviceTaint{DRADevice: dev, UUID: uuid, Key: t.Key, Value: t.Value, Effect: string(t.Effect), Rule: r.Name})
			}
		}
	})
	slices.SortFunc(out, func(a, b DRADeviceTaint) int {
		return cmp.Or(cmp.Compare(a.Driver, b.Driver), cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Device, b.Device),
			cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Effect, b.Effect), cmp.Compare(a.Value, b.Value))
	})
	return out
}

// selects reports whether a DeviceTaintRule's selector names dev; a nil
// selector or field matches any.
func selects(sel *resourcev1.DeviceTaintSelector, dev DRADevice) bool {
	if sel == nil {
		return true
	}
	match := func(want *string, got string) bool { return want == nil || *want == got }
	return match(sel.Driver, dev.Driver) && match(sel.Pool, dev.Pool) && match(sel.Device, dev.Device)
}

// ruleTransform returns a cache.TransformFunc that keeps of a
// DeviceTaintRule its identity, selector and taint (its status dropped).
// Idempotent; other objects pass through unchanged.
func ruleTransform() cache.TransformFunc {
	return func(obj any) (any, error) {
		r, ok := obj.(*resourcev1.DeviceTaintRule)
		if !ok {
			return obj, nil
		}
		return &resourcev1.DeviceTaintRule{
			ObjectMeta: slimMeta(&r.ObjectMeta),
			Spec: resourcev1.DeviceTaintRuleSpec{
				DeviceSelector: r.Spec.DeviceSelector,
				Taint:          resourcev1.DeviceTaint{Key: r.Spec.Taint.Key, Value: r.Spec.Taint.Value, Effect: r.Spec.Taint.Effect},
			},
		}, nil
	}
}

// slimTaints keeps key, value and effect of a device's taints.
func slimTaints(in []resourcev1.DeviceTaint) []resourcev1.DeviceTaint {
	if len(in) == 0 {
		return nil
	}
	out := make([]resourcev1.DeviceTaint, len(in))
	for i, t := range in {
		out[i] = resourcev1.DeviceTaint{Key: t.Key, Value: t.Value, Effect: t.Effect}
	}
	return out
}
