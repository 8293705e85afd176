package podresources

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DeviceRef is what one kubelet device ID says about the hardware behind it.
// Device plugins name devices in several dialects; the collector resolves a
// DeviceRef against the devices NVML reports, so the dialects are flattened
// here once, in a pure function.
//
// Exactly one way of naming the device is set: UUID (a GPU or MIG UUID),
// ParentUUID with GPUInstance/ComputeInstance (legacy MIG IDs), or Minor
// (GKE's device-node numbering).
type DeviceRef struct {
	// UUID is the NVML UUID of the device itself: "GPU-..." or "MIG-...".
	UUID string
	// ParentUUID names the physical GPU of a legacy "MIG-GPU-<uuid>/<gi>/<ci>" ID.
	ParentUUID string
	// Minor is the /dev/nvidia<minor> number of GKE's IDs, or -1.
	Minor int
	// GPUInstance and ComputeInstance address a MIG slice of the GPU named by
	// ParentUUID or Minor; -1 when not given.
	GPUInstance     int
	ComputeInstance int
	// Replica is the shared-access replica (time-slicing, MPS, GKE vgpu), or -1
	// for exclusive devices. Replicas of one device are the same hardware.
	Replica int
}

// Shared reports whether the ID names one replica of a device that several
// containers may hold at once.
func (r DeviceRef) Shared() bool { return r.Replica >= 0 }

// ErrDeviceID is wrapped by every ParseDeviceID error, so callers can count
// malformed IDs without matching strings.
var ErrDeviceID = errors.New("unrecognised device ID")

// ParseDeviceID understands every device ID form NVIDIA's device plugin, its
// time-slicing/MPS sharing and GKE's plugin hand to the kubelet:
//
//	GPU-<uuid>                   a whole GPU
//	GPU-<uuid>::<n>              replica n of a shared (time-sliced/MPS) GPU
//	MIG-<uuid>                   a MIG instance (also with ::<n>)
//	MIG-GPU-<uuid>/<gi>/<ci>     a MIG instance in the legacy form
//	nvidia<minor>                GKE: a whole GPU by device minor
//	nvidia<minor>/vgpu<n>        GKE: time-sharing replica n
//	nvidia<minor>/gi<n>          GKE: MIG GPU instance n
func ParseDeviceID(id string) (DeviceRef, error) {
	ref := DeviceRef{Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: -1}
	bad := func(why string) (DeviceRef, error) {
		return DeviceRef{}, fmt.Errorf("%w %q: %s", ErrDeviceID, id, why)
	}
	switch {
	case strings.HasPrefix(id, "MIG-GPU-"):
		rest := id[len("MIG-"):]
		uuid, path, ok := strings.Cut(rest, "/")
		if !ok {
			return bad("legacy MIG ID without /<gi>/<ci>")
		}
		if !validUUID(uuid[len("GPU-"):]) {
			return bad("malformed GPU UUID")
		}
		giS, ciS, ok := strings.Cut(path, "/")
		if !ok {
			return bad("legacy MIG ID without compute instance")
		}
		gi, err1 := parseSmallUint(giS)
		ci, err2 := parseSmallUint(ciS)
		if err1 != nil || err2 != nil {
			return bad("GPU/compute instance is not a small number")
		}
		ref.ParentUUID, ref.GPUInstance, ref.ComputeInstance = uuid, gi, ci
		return ref, nil
	case strings.HasPrefix(id, "GPU-"), strings.HasPrefix(id, "MIG-"):
		uuid, replica, shared := strings.Cut(id, "::")
		if !validUUID(uuid[4:]) {
			return bad("malformed UUID")
		}
		if shared {
			n, err := parseSmallUint(replica)
			if err != nil {
				return bad("replica is not a small number")
			}
			ref.Replica = n
		}
		ref.UUID = uuid
		return ref, nil
	case strings.HasPrefix(id, "nvidia"):
		minorS, sub, hasSub := strings.Cut(id[len("nvidia"):], "/")
		minor, err := parseSmallUint(minorS)
		if err != nil {
			return bad("device minor is not a small number")
		}
		ref.Minor = minor
		if !hasSub {
			return ref, nil
		}
		switch {
		case strings.HasPrefix(sub, "vgpu"):
			n, err := parseSmallUint(sub[len("vgpu"):])
			if err != nil {
				return bad("vgpu replica is not a small number")
			}
			ref.Replica = n
		case strings.HasPrefix(sub, "gi"):
			n, err := parseSmallUint(sub[len("gi"):])
			if err != nil {
				return bad("GPU instance is not a small number")
			}
			ref.GPUInstance = n
		default:
			return bad("unknown GKE device suffix")
		}
		return ref, nil
	}
	return bad("no known prefix (GPU-, MIG-, nvidia)")
}

// parseSmallUint accepts plain decimal numbers that fit the ranges device
// indexes live in; signs, spaces and leading '+' are rejected.
func parseSmallUint(s string) (int, error) {
	if s == "" || len(s) > 6 {
		return 0, errors.New("not a small number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number")
		}
	}
	n, err := strconv.Atoi(s)
	return n, err
}

// validUUID checks the 8-4-4-4-12 hex layout NVML uses for GPU and MIG UUIDs.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}
