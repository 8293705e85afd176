// Package cgroup tells which Kubernetes pod and container a process belongs
// to, from the cgroup path the kernel reports in /proc/<pid>/cgroup. NVML
// names GPU processes by PID only; this is the link from a PID to the
// container that holds a shared GPU.
//
// The path shapes differ by cgroup version (v1, v2), cgroup driver (systemd,
// cgroupfs) and container runtime (containerd, CRI-O, Docker/cri-dockerd);
// ParsePath understands all of them and is a pure function.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Owner is the pod and container a process runs in.
type Owner struct {
	// PodUID is the pod's metadata.uid, with dashes.
	PodUID string
	// ContainerID is the runtime's container ID (without a runtime prefix),
	// as in status.containerStatuses[].containerID after "<runtime>://".
	// It may be empty when the process sits in the pod's cgroup but no
	// container's (rare; the pod is still known).
	ContainerID string
}

// ErrNotInPod is returned for processes outside any Kubernetes pod cgroup
// (host processes, system services).
var ErrNotInPod = errors.New("process is not in a Kubernetes pod cgroup")

// ParsePath finds the pod UID and container ID in one cgroup path such as
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c..._..slice/cri-containerd-<id>.scope
//	/kubepods/besteffort/pod1b2c...-..../<id>
//	/kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope
//	/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/docker-<id>.scope
//
// Paths nested under another cgroup (kind, k3s, systemd sub-slices) work
// too: the pod segment is searched anywhere in the path.
func ParsePath(path string) (Owner, bool) {
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		uid, ok := podUID(seg)
		if !ok {
			continue
		}
		o := Owner{PodUID: uid}
		for _, next := range segs[i+1:] {
			if id, ok := containerID(next); ok {
				o.ContainerID = id
				break
			}
		}
		return o, true
	}
	return Owner{}, false
}

// podUID recognises "pod<uid>" (cgroupfs) and "kubepods[-qos]-pod<uid_with_underscores>.slice" (systemd).
func podUID(seg string) (string, bool) {
	var raw string
	switch {
	case strings.HasPrefix(seg, "pod"):
		raw = seg[len("pod"):]
	case strings.Contains(seg, "kubepods") && strings.HasSuffix(seg, ".slice"):
		// kubepods-burstable-pod<uid>.slice, or kind/k3s's
		// kubelet-kubepods-besteffort-pod<uid>.slice.
		i := strings.LastIndex(seg, "-pod")
		if i < 0 {
			return "", false
		}
		raw = strings.ReplaceAll(strings.TrimSuffix(seg[i+len("-pod"):], ".slice"), "_", "-")
	default:
		return "", false
	}
	if !isUID(raw) {
		return "", false
	}
	return strings.ToLower(raw), true
}

// containerID recognises a container's cgroup segment: a bare ID (cgroupfs)
// or "<runtime>-<id>.scope" (systemd). conmon's own scope (CRI-O) is not a
// container.
func containerID(seg string) (string, bool) {
	if strings.HasSuffix(seg, ".scope") {
		base := strings.TrimSuffix(seg, ".scope")
		if strings.HasPrefix(base, "crio-conmon-") {
			return "", false
		}
		for _, prefix := range []string{"cri-containerd-", "crio-", "docker-", "containerd-", "cri-o-"} {
			if id, ok := strings.CutPrefix(base, prefix); ok && isHexID(id) {
				return id, true
			}
		}
		return "", false
	}
	if isHexID(seg) {
		return seg, true
	}
	return "", false
}

// isUID accepts the 8-4-4-4-12 hex form Kubernetes UIDs take.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !isHex(c) {
			return false
		}
	}
	return true
}

// isHexID accepts runtime container IDs: 64 hex characters (containerd,
// CRI-O, Docker all use SHA-256 IDs); shorter IDs of at least 12 are allowed
// for test runtimes.
func isHexID(s string) bool {
	if len(s) < 12 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// ParseFile reads the content of a /proc/<pid>/cgroup file: lines of
// "hierarchy-ID:controllers:path". The cgroup v2 line ("0::") is preferred;
// on v1 any controller's path naming a pod is used.
func ParseFile(content []byte) (Owner, error) {
	var fallback *Owner
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		o, ok := ParsePath(parts[2])
		if !ok {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return o, nil
		}
		if fallback == nil || (fallback.ContainerID == "" && o.ContainerID != "") {
			o := o
			fallback = &o
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return Owner{}, ErrNotInPod
}

// Reader resolves PIDs through a procfs mount: the host's /proc, mounted into
// the exporter's pod, or a fixture tree in tests and on the simulated node.
type Reader struct {
	// Root is the procfs mount point, e.g. "/proc" or "/host/proc".
	Root string
}

// Owner reads /proc/<pid>/cgroup under Root.
func (r Reader) Owner(pid uint32) (Owner, error) {
	b, err := os.ReadFile(filepath.Join(r.Root, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return Owner{}, fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	return ParseFile(b)
}

// Available reports whether Root looks like a readable procfs: per-process
// attribution is impossible without it, and the collector says so.
func (r Reader) Available() error {
	if _, err := os.ReadFile(filepath.Join(r.Root, "self", "cgroup")); err != nil {
		if _, err2 := os.Stat(filepath.Join(r.Root, "1", "cgroup")); err2 != nil {
			return fmt.Errorf("procfs at %s not readable: %w", r.Root, err)
		}
	}
	return nil
}
