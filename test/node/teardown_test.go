package node

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// teardown stops everything the node started and removes everything it
// made: containers and their shims, mounts, cgroups, links and files. It
// reports, but does not stop at, what it cannot remove.
func (n *kubeNode) teardown(t *testing.T) {
	if t.Failed() {
		for _, name := range []string{"kubelet", "containerd", "kube-controller-manager", "kube-scheduler"} {
			t.Logf("the end of %s's log:\n%s", name, n.logTail(name))
		}
	}
	n.stop("kubelet", syscall.SIGTERM)
	n.removeContainers()
	n.stop("containerd", syscall.SIGTERM)
	n.stop("kube-controller-manager", syscall.SIGTERM)
	n.stop("kube-scheduler", syscall.SIGTERM)
	// What the runtime did not clean up: the containers' processes by
	// their cgroups, shims by the containerd socket they serve, mounts.
	n.killCgroupProcs()
	n.killShims()
	left := n.unmountAll()
	for _, h := range cgroupHierarchies() {
		if err := removeCgroupTree(filepath.Join(h, n.cgroupRoot)); err != nil {
			left = append(left, err.Error())
		}
	}
	if n.madeLink {
		os.Remove(devicePluginDir)
	}
	if n.madeVarLib {
		os.Remove(filepath.Dir(devicePluginDir))
	}
	n.removeLogLinks()
	if n.madeShimDir {
		// Made by this node's shims: a shim that was killed leaves its
		// socket behind.
		if err := os.RemoveAll(shimSocketDir); err != nil {
			left = append(left, err.Error())
		}
		os.Remove(filepath.Dir(shimSocketDir))
	}
	if err := os.RemoveAll(n.dir); err != nil {
		left = append(left, err.Error())
	}
	if len(left) > 0 {
		t.Errorf("teardown left: %s", strings.Join(left, "; "))
	}
}

// removeContainers asks containerd to kill and delete every task and
// container the kubelet left, so that the shims exit and unmount.
func (n *kubeNode) removeContainers() {
	out, err := n.ctr("tasks", "ls", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = n.ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range strings.Fields(out) {
		for range 50 {
			if _, err := n.ctr("tasks", "delete", id); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if out, err := n.ctr("containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = n.ctr("containers", "rm", id)
		}
	}
}

// killCgroupProcs kills every process left in the node's cgroups.
func (n *kubeNode) killCgroupProcs() {
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, n.cgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// killShims kills the runc shims that serve this node's containerd: a
// shim outlives containerd by design.
func (n *kubeNode) killShims() {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.HasSuffix(args[0], "containerd-shim-runc-v2") && slices.Contains(args, n.containerd) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountAll unmounts every mount under the node's dir, deepest first,
// and returns those that stay.
func (n *kubeNode) unmountAll() []string {
	var left []string
	for range 3 {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		var mounts []string
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) > 4 && (f[4] == n.dir || strings.HasPrefix(f[4], n.dir+"/")) {
				mounts = append(mounts, f[4])
			}
		}
		if len(mounts) == 0 {
			return nil
		}
		slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
		left = left[:0]
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				left = append(left, "mount "+m+": "+err.Error())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return left
}

// removeCgroupTree removes a cgroup and its children, deepest first,
// retrying while the killed processes leave them.
func removeCgroupTree(root string) error {
	var err error
	for range 50 {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return nil
		}
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		err = nil
		for _, d := range dirs {
			if e := syscall.Rmdir(d); e != nil && !os.IsNotExist(e) {
				err = e
			}
		}
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// removeLogLinks removes the kubelet's links in /var/log/containers to
// this node's log files, and the folder when the node made it.
func (n *kubeNode) removeLogLinks() {
	const dir = "/var/log/containers"
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, n.dir+"/") {
			os.Remove(p)
		}
	}
	if n.madeLogDir {
		os.Remove(dir)
	}
}
