package simulate

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeProcfs writes <root>/<pid>/cgroup for every simulated process, and
// <root>/self/cgroup so the tree reads as a procfs.
func (n *Node) writeProcfs(root string) error {
	write := func(pid, content string) error {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			return fmt.Errorf("simulated procfs: %w", err)
		}
		return os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(content), 0o644)
	}
	if err := write("self", "0::/system.slice/kube-gpu-exporter.service\n"); err != nil {
		return err
	}
	k := 0
	for _, p := range n.scenario.Pods {
		for _, c := range p.Containers {
			if len(c.Devices)+len(c.UnallocatedDevices) > 0 {
				if err := write(fmt.Sprint(pidOf(k)), "0::"+cgroupPath(p.Namespace, p.Name, c.Name)+"\n"); err != nil {
					return err
				}
			}
			k++
		}
	}
	n.ProcRoot = root
	return nil
}

// pidOf is the PID of the k-th container's process.
func pidOf(k int) uint32 { return uint32(20000 + k) }

// ProcessContainer names the container a simulated process runs in, as
// "namespace/pod/container": the process name a stand-in nvidia-smi lists.
func (n *Node) ProcessContainer(pid uint32) (string, bool) {
	k := 0
	for _, p := range n.scenario.Pods {
		for _, c := range p.Containers {
			if pidOf(k) == pid {
				return p.Namespace + "/" + p.Name + "/" + c.Name, true
			}
			k++
		}
	}
	return "", false
}
