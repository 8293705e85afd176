package simulate

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/client-go/rest"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
)

// UUID is the deterministic UUID of simulated GPU i, so dashboards, golden
// files and docs can name the same device every run.
func UUID(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

// MIGUUID is the deterministic UUID of MIG instance j of simulated GPU i.
func MIGUUID(i, j int) string { return fmt.Sprintf("MIG-00000000-0000-4000-9000-%06d%06d", i, j) }

// MIGInstanceID is the GPU instance ID of MIG instance j: IDs are handed out
// from 1 in the order the scenario lists the instances; every instance has
// one compute instance, ID 0.
func MIGInstanceID(j int) int { return j + 1 }

// devKey names a whole GPU (MIG -1) or one of its MIG instances.
type devKey struct{ GPU, MIG int }

// samplePeriod is how often the simulated driver takes a utilization sample.
const samplePeriod = time.Second

// nvmlHistory is how far back the simulated driver remembers samples, as the
// real one does.
const nvmlHistory = 16 * time.Second

// holder is one container's process on a device. Each container runs one
// process (one PID), on every GPU it uses.
type holder struct {
	wave   Wave
	phase  float64
	memory uint64
	pid    uint32
	gpm    gpmRates
	// spread marks a process on several devices: it talks to its peers
	// over NVLink.
	spread bool
}

// Node is a running simulated node.
type Node struct {
	// Name is the node's name.
	Name string
	// NVML is the mock NVML library, ready for nvml.NewSampler.
	NVML gonvml.Interface
	// Socket is the pod-resources socket, or "" when the scenario has no
	// pods (the exporter then uses the real kubelet socket).
	Socket string
	// RESTConfig reaches the simulated Kubernetes API server (this node's
	// Node and pods); nil when the scenario has no pods.
	RESTConfig *rest.Config
	// ProcRoot is a procfs-shaped tree with the cgroup file of every
	// simulated GPU process, for the exporter's --path.procfs.
	ProcRoot string

	scenario *Scenario
	now      func() time.Time
	started  time.Time // Xid offsets and energy count from here
	xids     xidSchedule
	holders  map[devKey][]holder
	bus      []*nvmltest.Bus // per GPU: on the bus, or lost after an Xid with lost set
	server   *fakekubelet.Server
	api      *apiServer
	dir      string
	list     *podresourcesv1.ListPodResourcesResponse
	alloc    *podresourcesv1.AllocatableResourcesResponse
}

// Start builds the node's NVML mock and, when the scenario has pods, serves
// them on a pod-resources socket in a private temporary directory. now is the
// clock (nil for time.Now); tests pass a fixed one for golden output.
func Start(s *Scenario, now func() time.Time) (*Node, error) {
	if now == nil {
		now = time.Now
	}
	n := &Node{Name: s.Node, scenario: s, now: now, started: now(), holders: map[devKey][]holder{}}
	n.buildHolders()
	n.NVML = n.buildNVML()
	if len(s.Pods) == 0 {
		return n, nil
	}
	n.list, n.alloc = n.buildPodResources()
	dir, err := os.MkdirTemp("", "kube-gpu-exporter-sim-")
	if err != nil {
		return nil, fmt.Errorf("simulated kubelet directory: %w", err)
	}
	n.dir = dir
	if err := n.writeProcfs(filepath.Join(dir, "proc")); err != nil {
		n.Close()
		return nil, err
	}
	n.Socket = filepath.Join(dir, "kubelet.sock")
	n.server = fakekubelet.NewServer(n)
	if err := n.server.Listen(n.Socket); err != nil {
		n.Close()
		return nil, err
	}
	pods, nodes := n.buildAPIObjects()
	if n.api, err = startAPIServer(pods, nodes, n.buildResourceSlices()); err != nil {
		n.Close()
		return nil, err
	}
	n.RESTConfig = n.api.restConfig()
	return n, nil
}

// Close stops the simulated kubelet, API server and scheduled Xid events,
// and removes their files.
func (n *Node) Close() {
	n.xids.closed.Store(true)
	if n.server != nil {
		n.server.Stop()
	}
	if n.api != nil {
		n.api.close()
	}
	if n.dir != "" {
		os.RemoveAll(n.dir)
	}
}

func (n *Node) buildHolders() {
	k := 0
	for _, p := range n.scenario.Pods {
		for _, c := range p.Containers {
			seen := map[devKey]bool{}
			devs := append(append([]string(nil), c.Devices...), c.UnallocatedDevices...)
			for _, d := range devs {
				ref, _ := ParseDevice(d) // validated by Parse
				key := devKey{ref.GPU, ref.MIG}
				if seen[key] {
					continue
				}
				seen[key] = true
				n.holders[key] = append(n.holders[key], holder{
					wave:   c.Utilization,
					phase:  float64(k) * 2 * math.Pi / 7,
					memory: uint64(c.MemoryGiB * (1 << 30)),
					pid:    pidOf(k),
					gpm:    c.GPM.resolve(),
					spread: len(devs) > 1,
				})
			}
			k++
		}
	}
}

// Utilization is GPU i's utilization at t: the sum of its processes'
// utilization, capped at 100. The sampler must recover exactly these values.
func (n *Node) Utilization(i int, t time.Time) float64 { return n.utilization(devKey{i, -1}, t) }

// InstanceUtilization is the utilization of MIG instance j of GPU i at t,
// which GPM reports between two samples.
func (n *Node) InstanceUtilization(i, j int, t time.Time) float64 {
	return n.utilization(devKey{i, j}, t)
}

func (n *Node) utilization(k devKey, t time.Time) float64 {
	var u float64
	for _, h := range n.holders[k] {
		u += h.at(t)
	}
	return math.Max(0, math.Min(100, u))
}

// at is the process's SM utilization at t.
func (h holder) at(t time.Time) float64 {
	v := h.wave.Mean
	if h.wave.Period > 0 {
		secs := float64(t.UnixNano()) / 1e9
		v += h.wave.Swing * math.Sin(2*math.Pi*secs/time.Duration(h.wave.Period).Seconds()+h.phase)
	}
	return math.Max(0, math.Min(100, v))
}

// MemoryUsed is GPU i's used memory in bytes, capped at its total; on a
// MIG-enabled GPU, the sum of its instances'.
func (n *Node) MemoryUsed(i int) uint64 {
	if profiles, ok := n.scenario.MIG[i]; ok {
		var used uint64
		for j := range profiles {
			used += n.InstanceMemoryUsed(i, j)
		}
		return used
	}
	return min(n.holdersMemory(devKey{i, -1}), models[n.scenario.Model].MemoryMB<<20)
}

// InstanceMemoryUsed is MIG instance j of GPU i's used memory in bytes,
// capped at the instance's memory.
func (n *Node) InstanceMemoryUsed(i, j int) uint64 {
	return min(n.holdersMemory(devKey{i, j}), n.instanceMemory(i, j))
}

func (n *Node) instanceMemory(i, j int) uint64 {
	return migProfiles(n.scenario.Model)[n.scenario.MIG[i][j]].MemoryMB << 20
}

func (n *Node) holdersMemory(k devKey) uint64 {
	var used uint64
	for _, h := range n.holders[k] {
		used += h.memory
	}
	return used
}
