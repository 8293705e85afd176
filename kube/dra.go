package kube

import (
	"cmp"
	"slices"
	"strings"

	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/client-go/tools/cache"
)

// DRADriver is how many devices one DRA driver publishes for this node in
// its ResourceSlices: the node's capacity (and allocatable: DRA has no
// separate notion) of that driver's GPUs.
type DRADriver struct {
	Driver  string
	Devices int
}

// DRADevice names a device the way the kubelet reports a claim's
// allocation: driver, pool and device name.
type DRADevice struct {
	Driver, Pool, Device string
}

// uuidAttribute is the device attribute NVIDIA's DRA driver sets to the
// NVML UUID of a GPU or MIG instance. Unqualified attribute names belong to
// the driver's own domain, so "<driver>/uuid" is the same attribute.
const uuidAttribute = "uuid"

// ResourceSliceDevices reads the node's ResourceSlices of the given drivers:
// the NVML UUID of every device that carries a uuid attribute, and the
// number of devices per driver. Only the newest generation of each pool
// counts: while a driver republishes a pool, slices of the old generation
// may still be listed and must not be counted twice.
func ResourceSliceDevices(list []*resourcev1.ResourceSlice, drivers []string) (map[DRADevice]string, []DRADriver) {
	uuids := map[DRADevice]string{}
	counts := map[string]int{}
	eachCurrentDevice(list, drivers, func(dev DRADevice, d *resourcev1.Device) {
		counts[dev.Driver]++
		if u := deviceUUID(dev.Driver, d.Attributes); u != "" {
			uuids[dev] = u
		}
	})
	out := make([]DRADriver, 0, len(counts))
	for driver, n := range counts {
		out = append(out, DRADriver{Driver: driver, Devices: n})
	}
	slices.SortFunc(out, func(a, b DRADriver) int { return cmp.Compare(a.Driver, b.Driver) })
	return uuids, out
}

// eachCurrentDevice calls fn once for every device of the given drivers'
// slices, in the newest generation of each pool only.
func eachCurrentDevice(list []*resourcev1.ResourceSlice, drivers []string, fn func(DRADevice, *resourcev1.Device)) {
	type poolKey struct{ driver, pool string }
	newest := map[poolKey]int64{}
	for _, s := range list {
		if !slices.Contains(drivers, s.Spec.Driver) {
			continue
		}
		k := poolKey{s.Spec.Driver, s.Spec.Pool.Name}
		if g, ok := newest[k]; !ok || s.Spec.Pool.Generation > g {
			newest[k] = s.Spec.Pool.Generation
		}
	}
	seen := map[DRADevice]bool{}
	for _, s := range list {
		if g, ok := newest[poolKey{s.Spec.Driver, s.Spec.Pool.Name}]; !ok || s.Spec.Pool.Generation != g {
			continue
		}
		for i := range s.Spec.Devices {
			d := &s.Spec.Devices[i]
			dev := DRADevice{Driver: s.Spec.Driver, Pool: s.Spec.Pool.Name, Device: d.Name}
			if seen[dev] {
				continue
			}
			seen[dev] = true
			fn(dev, d)
		}
	}
}

func deviceUUID(driver string, attrs map[resourcev1.QualifiedName]resourcev1.DeviceAttribute) string {
	for _, name := range []string{uuidAttribute, driver + "/" + uuidAttribute} {
		if a, ok := attrs[resourcev1.QualifiedName(name)]; ok && a.StringValue != nil {
			return strings.TrimSpace(*a.StringValue)
		}
	}
	return ""
}

// sliceTransform returns a cache.TransformFunc that keeps of a
// ResourceSlice only its identity, driver, pool, node and each device's
// name, uuid attribute and taints (key, value, effect); capacities, other
// attributes and counters are dropped. Idempotent; other objects pass through unchanged.
func sliceTransform() cache.TransformFunc {
	return func(obj any) (any, error) {
		s, ok := obj.(*resourcev1.ResourceSlice)
		if !ok {
			return obj, nil
		}
		out := &resourcev1.ResourceSlice{
			ObjectMeta: slimMeta(&s.ObjectMeta),
			Spec: resourcev1.ResourceSliceSpec{
				Driver:   s.Spec.Driver,
				Pool:     s.Spec.Pool,
				NodeName: s.Spec.NodeName,
			},
		}
		if len(s.Spec.Devices) > 0 {
			out.Spec.Devices = make([]resourcev1.Device, len(s.Spec.Devices))
		}
		for i, d := range s.Spec.Devices {
			out.Spec.Devices[i].Name = d.Name
			out.Spec.Devices[i].Taints = slimTaints(d.Taints)
			for _, name := range []string{uuidAttribute, s.Spec.Driver + "/" + uuidAttribute} {
				if a, ok := d.Attributes[resourcev1.QualifiedName(name)]; ok {
					out.Spec.Devices[i].Attributes = map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{resourcev1.QualifiedName(name): a}
					break
				}
			}
		}
		return out, nil
	}
}
