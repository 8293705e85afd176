package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/kubecluster"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// devicePluginDir is where every kubelet serves device-plugin registration,
// whatever its --root-dir (pluginapi.DevicePluginPath).
const devicePluginDir = "/var/lib/kubelet/device-plugins"

// kubeNode is one real node: containerd and runc, a kubelet, and the
// control plane's scheduler and controller manager, on an etcd and
// kube-apiserver of its own. Everything it makes lives under dir, but for
// the cgroups under cgroupRoot, the device-plugin link and the kubelet's
// /var/log/containers links, which teardown removes.
type kubeNode struct {
	c          *kubecluster.Cluster
	dir        string
	name, ip   string
	bins       map[string]string
	admin      string // admin kubeconfig
	containerd string // containerd's socket
	rootDir    string // the kubelet's --root-dir
	cgroupRoot string
	kubeletCfg string

	mu    sync.Mutex
	procs map[string]*exec.Cmd
	// made lists what teardown must undo outside dir.
	madeLink, madeVarLib, madeLogDir, madeShimDir bool
}

// requireTools returns the programs the node runs. Under CI a missing one
// fails the test: .ci/run installs them all.
func requireTools(t *testing.T) map[string]string {
	bins := map[string]string{}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
		"containerd", "containerd-shim-runc-v2", "ctr", "runc", "helm"} {
		bins[b] = tooltest.Require(t, b)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the node test runs containerd and a kubelet: it needs root")
		}
		t.Skip("the node test runs containerd and a kubelet: it needs root")
	}
	return bins
}

// nodeIP returns the first non-loopback IPv4 address: the kubelet refuses
// a loopback node IP. Nothing in the tests dials it.
func nodeIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address for the kubelet's --node-ip")
	return ""
}

// startNode brings the node up and registers its teardown.
func startNode(t *testing.T) *kubeNode {
	bins := requireTools(t)
	holdMachine(t)
	// unix socket paths are limited to 108 bytes: a short root of its own.
	dir, err := os.MkdirTemp("", "kge-node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &kubeNode{
		dir: dir, name: "kge-node", ip: nodeIP(t), bins: bins, procs: map[string]*exec.Cmd{},
		containerd: filepath.Join(dir, "containerd.sock"), rootDir: filepath.Join(dir, "kubelet"),
		cgroupRoot: "/" + filepath.Base(dir),
	}
	t.Cleanup(func() { n.teardown(t) })
	start := time.Now()
	n.c = kubecluster.Start(t)
	n.admin = n.c.AdminKubeconfig(t)
	n.startControlPlane(t)
	n.startContainerd(t)
	n.importImages(t)
	n.linkDevicePlugins(t)
	n.makeCgroupRoot(t)
	n.writeKubeletConfig(t)
	n.startKubelet(t)
	n.waitReady(t, 90*time.Second)
	n.label(t, map[string]string{"nvidia.com/gpu.present": "true"})
	t.Logf("node up in %v", time.Since(start).Round(time.Millisecond))
	return n
}

// run starts a long-lived process, its output in dir/<name>.log.
func (n *kubeNode) run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := os.OpenFile(filepath.Join(n.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.bins[name], args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that a test killed mid-run does not leave
	// it behind in the terminal's group only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	n.mu.Lock()
	n.procs[name] = cmd
	n.mu.Unlock()
}

// stop ends a process started by run, as kubecluster.Stop ends the API
// server, and closes its log.
func (n *kubeNode) stop(name string, sig syscall.Signal) {
	n.mu.Lock()
	cmd := n.procs[name]
	delete(n.procs, name)
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	kubecluster.Stop(cmd, sig)
	cmd.Stdout.(*os.File).Close()
}

// logTail returns the end of a process's log; teardown shows them when the
// test failed.
func (n *kubeNode) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, name+".log"))
	return kubecluster.Tail(string(b), 3000)
}

func (n *kubeNode) startControlPlane(t *testing.T) {
	n.run(t, "kube-scheduler", "--kubeconfig="+n.admin, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+port(tooltest.FreeAddr(t)),
		"--authentication-kubeconfig="+n.admin, "--authorization-kubeconfig="+n.admin)
	// The controller manager runs the DaemonSet the chart renders and
	// gives every namespace its default ServiceAccount and kube-root-ca.crt.
	n.run(t, "kube-controller-manager", "--kubeconfig="+n.admin, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+port(tooltest.FreeAddr(t)),
		"--authentication-kubeconfig="+n.admin, "--authorization-kubeconfig="+n.admin,
		"--root-ca-file="+filepath.Join(n.c.Dir, "ca.crt"),
		"--service-account-private-key-file="+filepath.Join(n.c.Dir, "sa.key"),
		"--use-service-account-credentials=false",
		"--concurrent-daemonset-syncs=1")
}

func port(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// containerdConfig is containerd 1.6's, every path under the node's dir.
// restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, and runc
// fails every sandbox that asks for a lower OOM score without it.
const containerdConfig = `version = 2
root = "%[1]s/containerd/root"
state = "%[1]s/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "%[2]s"
[ttrpc]
  address = "%[1]s/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[3]s"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "%[1]s/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[1]s/cni/bin"
    conf_dir = "%[1]s/cni/net.d"
`

// loopbackCNI makes the runtime's network ready; every pod here uses the
// host's network, which needs no plugin binary.
const loopbackCNI = `{"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}`

func (n *kubeNode) startContainerd(t *testing.T) {
	for _, d := range []string{"cni/bin", "cni/net.d", "runc"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(n.dir, "cni/net.d/99-loopback.conf"), []byte(loopbackCNI), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(n.dir, "containerd.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, containerdConfig, n.dir, n.containerd, pauseImage), 0o644); err != nil {
		t.Fatal(err)
	}
	// The runc shims put their sockets in /run/containerd/s whatever the
	// configuration says.
	if _, err := os.Stat(shimSocketDir); os.IsNotExist(err) {
		n.madeShimDir = true
	}
	n.run(t, "containerd", "--config="+cfg)
	n.waitContainerd(t)
}

// shimSocketDir is where containerd 1.6's shims serve, fixed at build time.
const shimSocketDir = "/run/containerd/s"

// waitContainerd waits until containerd answers on its socket.
func (n *kubeNode) waitContainerd(t *testing.T) {
	testkit.EventuallyNil(t, 30*time.Second, "containerd answers", func() error {
		if out, err := n.ctr("version"); err != nil || !strings.Contains(out, "Server:") {
			return fmt.Errorf("ctr version: %w: %s", err, out)
		}
		return nil
	})
}

// ctr runs ctr against the node's containerd, in the CRI's namespace.
func (n *kubeNode) ctr(args ...string) (string, error) {
	cmd := exec.Command(n.bins["ctr"], append([]string{"--address", n.containerd, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// linkDevicePlugins points the fixed device-plugin folder at the node's.
func (n *kubeNode) linkDevicePlugins(t *testing.T) {
	own := filepath.Join(n.dir, "device-plugins")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	// A link left by a run that was killed points at a folder gone with it.
	if target, err := os.Readlink(devicePluginDir); err == nil && strings.HasPrefix(filepath.Base(filepath.Dir(target)), "kge-node-") {
		if _, err := os.Stat(target); os.IsNotExist(err) {
			os.Remove(devicePluginDir)
		}
	}
	if _, err := os.Lstat(devicePluginDir); err == nil {
		t.Fatalf("%s exists: another kubelet runs on this machine, or a node test still runs", devicePluginDir)
	}
	if _, err := os.Stat(filepath.Dir(devicePluginDir)); os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(devicePluginDir), 0o755); err != nil {
			t.Fatal(err)
		}
		n.madeVarLib = true
	}
	if err := os.Symlink(own, devicePluginDir); err != nil {
		t.Fatal(err)
	}
	n.madeLink = true
}

// cgroupHierarchies returns the cgroup v1 hierarchies mounted under
// /sys/fs/cgroup (and the v2 one, where mounted).
func cgroupHierarchies() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		// Fields after the " - " separator: fstype, source, options.
		sep := strings.Index(line, " - ")
		fstype := strings.Fields(line[sep+3:])[0]
		if (fstype == "cgroup" || fstype == "cgroup2") && strings.HasPrefix(f[4], "/sys/fs/cgroup/") {
			out = append(out, f[4])
		}
	}
	return out
}

// makeCgroupRoot gives the kubelet a cgroup root of its own in every
// hierarchy (the kubelet requires it to exist), so that teardown removes
// exactly what the node made.
func (n *kubeNode) makeCgroupRoot(t *testing.T) {
	for _, h := range cgroupHierarchies() {
		if err := os.Mkdir(filepath.Join(h, n.cgroupRoot), 0o755); err != nil {
			t.Fatalf("cgroup root: %v", err)
		}
	}
	if _, err := os.Stat("/var/log/containers"); os.IsNotExist(err) {
		n.madeLogDir = true
	}
}

// kubeletConfig binds every port to loopback and keeps every path under
// the node's dir; failCgroupV1: false lets it run on this cgroup v1 host.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %[2]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]s
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[4]s
containerRuntimeEndpoint: unix://%[5]s
podLogsDir: %[1]s/pod-logs
volumePluginDir: %[1]s/volume-plugins
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[6]s}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
serializeImagePulls: false
resolvConf: ""
staticPodPath: ""
`

func (n *kubeNode) writeKubeletConfig(t *testing.T) {
	n.kubeletCfg = filepath.Join(n.dir, "kubelet.yaml")
	cfg := fmt.Sprintf(kubeletConfig, n.dir, port(tooltest.FreeAddr(t)), port(tooltest.FreeAddr(t)), n.cgroupRoot, n.containerd,
		filepath.Join(n.c.Dir, "ca.crt"))
	if err := os.WriteFile(n.kubeletCfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (n *kubeNode) startKubelet(t *testing.T) {
	n.run(t, "kubelet", "--config="+n.kubeletCfg, "--kubeconfig="+n.admin, "--root-dir="+n.rootDir,
		"--cert-dir="+filepath.Join(n.dir, "kubelet-pki"), "--hostname-override="+n.name, "--node-ip="+n.ip, "--v=2")
}

// podResourcesSocket is the kubelet's pod-resources socket.
func (n *kubeNode) podResourcesSocket() string {
	return filepath.Join(n.rootDir, "pod-resources", "kubelet.sock")
}

// waitReady waits for the Node to be Ready.
func (n *kubeNode) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	testkit.EventuallyNil(t, timeout, "node Ready", func() error {
		node, err := n.c.Client.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", node.Status.Conditions)
	})
}

func (n *kubeNode) label(t *testing.T, labels map[string]string) {
	t.Helper()
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%q:%q", k, v))
	}
	patch := `{"metadata":{"labels":{` + strings.Join(parts, ",") + `}}}`
	if _, err := n.c.Client.CoreV1().Nodes().Patch(context.Background(), n.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// holdMachine waits until no other test process runs a node on this
// machine, and holds it until the test ends: the kubelet's device-plugin
// folder and containerd's shim sockets are machine-wide paths, and two
// nodes at once would take each other's plugins and containers.
func holdMachine(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "kube-gpu-exporter-node.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Log("another test runs a node on this machine; waiting for it")
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { f.Close() }) // registered first, so it runs after the teardown
}
