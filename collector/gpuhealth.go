package collector

import (
	"slices"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// criticalXids are the Xid codes that mean the GPU itself needs attention
// (memory errors, row remapping, NVLink, fallen off the bus, GSP), as
// opposed to codes an application's own fault raises (13, 31, 43, ...).
var criticalXids = map[uint64]bool{48: true, 61: true, 62: true, 63: true, 64: true, 74: true, 79: true,
	92: true, 94: true, 95: true, 119: true, 120: true, 140: true}

// xidRecent is how long a critical Xid keeps a GPU failed.
const xidRecent = 10 * time.Minute

// Health statuses and reasons: bounded label sets.
const (
	statusHealthy  = "healthy"
	statusDegraded = "degraded"
	statusFailed   = "failed"
)

// DeviceHealth is one device's health summary.
type DeviceHealth struct {
	Device         *nvml.Reading
	Status, Reason string
}

// ContainerHealth is the health of a device a container holds.
type ContainerHealth struct {
	Usage          *Usage
	Status, Reason string
}

// healthOf sums a device's readings up into one status and the most severe
// reason, in the order an operator acts on them. It is a pure function of
// the reading and the time of the snapshot.
func healthOf(d *nvml.Reading, lost bool, now time.Time) (status, reason string) {
	h, t := &d.Health, &d.Telemetry
	switch {
	case lost:
		return statusFailed, "lost"
	case recentCriticalXid(d, now):
		return statusFailed, "xid"
	case h.RemapFailed.OK && h.RemapFailed.V > 0:
		return statusFailed, "row_remap_failure"
	case h.RecoveryAction.OK && h.RecoveryAction.V != 0:
		return statusFailed, "recovery_action"
	case h.ECC[1][0].OK && h.ECC[1][0].V > 0:
		return statusDegraded, "uncorrectable_ecc"
	case h.RemapPending.OK && h.RemapPending.V > 0, h.RetiredPending.OK && h.RetiredPending.V > 0:
		return statusDegraded, "pending_remap"
	case t.HasClockEvent && t.ClockEvents&thermalSlowdown != 0:
		return statusDegraded, "thermal_slowdown"
	}
	return statusHealthy, "none"
}

// thermalSlowdown is the clock event bits of thermal throttling.
var thermalSlowdown = func() uint64 {
	var bits uint64
	for _, r := range nvml.ClockEventReasons {
		if r.Name == "sw_thermal_slowdown" || r.Name == "hw_thermal_slowdown" {
			bits |= r.Bit
		}
	}
	return bits
}()

func recentCriticalXid(d *nvml.Reading, now time.Time) bool {
	if d.LastXid.IsZero() || now.Sub(d.LastXid) > xidRecent {
		return false
	}
	for code, n := range d.Xid {
		if n > 0 && criticalXids[code] {
			return true
		}
	}
	return false
}

// addHealth fills the view's health rows: every device, the lost ones, and
// every container's device.
func addHealth(v *View, lost []nvml.DeviceInfo, now time.Time) {
	for i := range v.Devices {
		d := &v.Devices[i]
		if d.IsMIG() {
			continue // an instance is as healthy as its GPU
		}
		st, rs := healthOf(d, false, now)
		v.Health = append(v.Health, DeviceHealth{Device: d, Status: st, Reason: rs})
	}
	for _, info := range lost {
		d := &nvml.Reading{DeviceInfo: info}
		v.Health = append(v.Health, DeviceHealth{Device: d, Status: statusFailed, Reason: "lost"})
	}
	byUUID := make(map[string]*DeviceHealth, len(v.Health))
	for i := range v.Health {
		byUUID[v.Health[i].Device.UUID] = &v.Health[i]
	}
	for i := range v.Usage {
		u := &v.Usage[i]
		h := byUUID[u.Device.UUID]
		if h == nil && u.Device.IsMIG() {
			h = byUUID[u.Device.ParentUUID] // an instance is as healthy as its GPU
		}
		if h != nil {
			v.ContainerHealth = append(v.ContainerHealth, ContainerHealth{Usage: u, Status: h.Status, Reason: h.Reason})
		}
	}
}

func sortedCodes(m map[uint64]uint64) []uint64 {
	codes := make([]uint64, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}

// deviceHealthFamilies are the device health summary (--collector.health).
var deviceHealthFamilies = []Family[DeviceHealth]{{
	Name:   Prefix + "_health_status",
	Help:   "1 for the device's health: status healthy, degraded or failed, with the most severe reason (none, lost, xid, row_remap_failure, recovery_action, uncorrectable_ecc, pending_remap, thermal_slowdown).",
	Labels: []string{"status", "reason"},
	Each:   func(h *DeviceHealth, emit func(float64, ...string)) { emit(1, h.Status, h.Reason) },
}}

// containerHealthFamilies join the holders in.
var containerHealthFamilies = []Family[ContainerHealth]{{
	Name:   Prefix + "_container_health_status",
	Help:   "1 for the health of the device the container holds (see kube_gpu_health_status), so that an alert names the pod.",
	Labels: []string{"status", "reason"},
	Each:   func(h *ContainerHealth, emit func(float64, ...string)) { emit(1, h.Status, h.Reason) },
}}
