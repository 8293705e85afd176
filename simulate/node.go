package simulate

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"k8s.io/client-go/rest"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

var models = map[string]gpus.Config{
	"A100-SXM4-40GB":  gpus.A100_SXM4_40GB,
	"A100-SXM4-80GB":  gpus.A100_SXM4_80GB,
	"A100-PCIE-40GB":  gpus.A100_PCIE_40GB,
	"A100-PCIE-80GB":  gpus.A100_PCIE_80GB,
	"A30-PCIE-24GB":   gpus.A30_PCIE_24GB,
	"H100-SXM5-80GB":  gpus.H100_SXM5_80GB,
	"H200-SXM5-141GB": gpus.H200_SXM5_141GB,
	"B200-SXM5-180GB": gpus.B200_SXM5_180GB,
}

// ModelNames lists the GPU models a scenario may name.
func ModelNames() []string {
	out := make([]string, 0, len(models))
	for k := range models {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

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
	holders  map[devKey][]holder
	server   *podresources.Server
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
	n := &Node{Name: s.Node, scenario: s, now: now, holders: map[devKey][]holder{}}
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
	n.server = podresources.NewServer(n)
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

// Close stops the simulated kubelet and API server and removes their files.
func (n *Node) Close() {
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
			for _, d := range append(append([]string(nil), c.Devices...), c.UnallocatedDevices...) {
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

func (n *Node) buildNVML() gonvml.Interface {
	cfg := models[n.scenario.Model]
	cfgs := make([]gpus.Config, n.scenario.GPUs)
	for i := range cfgs {
		cfgs[i] = cfg
	}
	srv := dgxa100.NewWithGPUs(cfgs...)
	for i, d := range srv.Devices {
		i, dev := i, d.(*dgxa100.Device)
		dev.UUID = UUID(i)
		dev.PciBusID = fmt.Sprintf("00000000:%02X:00.0", 0x10+i)
		dev.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
			p := gonvml.PciInfo{PciDeviceId: cfg.PciDeviceId, Bus: uint32(0x10 + i)}
			for k := 0; k < len(dev.PciBusID) && k < len(p.BusId)-1; k++ {
				p.BusId[k] = int8(dev.PciBusID[k])
			}
			return p, gonvml.SUCCESS
		}
		dev.GetSamplesFunc = func(_ gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			now := n.now()
			from := now.Add(-nvmlHistory).Truncate(samplePeriod)
			var out []gonvml.Sample
			for t := from; !t.After(now); t = t.Add(samplePeriod) {
				ts := uint64(t.UnixMicro())
				if ts <= last {
					continue
				}
				v := uint32(math.Round(n.Utilization(i, t)))
				out = append(out, gonvml.Sample{TimeStamp: ts, SampleValue: nvml.EncodeUint32Sample(v)})
			}
			if len(out) == 0 {
				return gonvml.VALUE_TYPE_UNSIGNED_INT, nil, gonvml.ERROR_NOT_FOUND
			}
			return gonvml.VALUE_TYPE_UNSIGNED_INT, out, gonvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
			return gonvml.Utilization{Gpu: uint32(math.Round(n.Utilization(i, n.now())))}, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			total := dev.MemoryInfo.Total
			used := n.MemoryUsed(i)
			return gonvml.Memory_v2{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
		}
		dev.GetComputeRunningProcessesFunc = n.processes(devKey{i, -1})
		dev.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
			return nil, gonvml.ERROR_NOT_SUPPORTED // time-slicing, not MPS
		}
		dev.GetProcessUtilizationFunc = func(last uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
			now := n.now()
			var out []gonvml.ProcessUtilizationSample
			for t := now.Add(-nvmlHistory).Truncate(samplePeriod); !t.After(now); t = t.Add(samplePeriod) {
				ts := uint64(t.UnixMicro())
				if ts <= last {
					continue
				}
				for _, h := range n.holders[devKey{i, -1}] {
					out = append(out, gonvml.ProcessUtilizationSample{Pid: h.pid, TimeStamp: ts, SmUtil: uint32(math.Round(h.at(t)))})
				}
			}
			if len(out) == 0 {
				return nil, gonvml.ERROR_NOT_FOUND
			}
			return out, gonvml.SUCCESS
		}
		dev.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) {
			total := dev.MemoryInfo.Total
			used := n.MemoryUsed(i)
			return gonvml.Memory{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
		}
		if profiles, ok := n.scenario.MIG[i]; ok {
			n.partition(dev, i, profiles)
		}
	}
	n.serveGPM(srv)
	return srv
}

// processes lists the processes of the containers holding a device.
func (n *Node) processes(k devKey) func() ([]gonvml.ProcessInfo, gonvml.Return) {
	return func() ([]gonvml.ProcessInfo, gonvml.Return) {
		out := make([]gonvml.ProcessInfo, 0, len(n.holders[k]))
		for _, h := range n.holders[k] {
			out = append(out, gonvml.ProcessInfo{Pid: h.pid, UsedGpuMemory: h.memory})
		}
		return out, gonvml.SUCCESS
	}
}

// partition turns MIG on for GPU i and gives it one instance per profile,
// as the driver shows them: own UUID, GPU and compute instance IDs, a name
// ending in the profile, own memory and processes. Per-process utilization
// and v2 memory are not supported on MIG instances, as on real hardware.
func (n *Node) partition(dev *dgxa100.Device, i int, profiles []string) {
	dev.MigMode = gonvml.DEVICE_MIG_ENABLE
	migs := make([]gonvml.Device, len(profiles))
	for j, profile := range profiles {
		j, name := j, dev.Config.Name+" MIG "+profile
		total := n.instanceMemory(i, j)
		migs[j] = &mock.Device{
			GetUUIDFunc:              func() (string, gonvml.Return) { return MIGUUID(i, j), gonvml.SUCCESS },
			GetNameFunc:              func() (string, gonvml.Return) { return name, gonvml.SUCCESS },
			GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return MIGInstanceID(j), gonvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				used := n.InstanceMemoryUsed(i, j)
				return gonvml.Memory{Total: total, Used: used, Free: total - used}, gonvml.SUCCESS
			},
			GetMemoryInfo_v2Func:           func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NOT_SUPPORTED },
			GetComputeRunningProcessesFunc: n.processes(devKey{i, j}),
			GetMPSComputeRunningProcessesFunc: func() ([]gonvml.ProcessInfo, gonvml.Return) {
				return nil, gonvml.ERROR_NOT_SUPPORTED
			},
			GetProcessUtilizationFunc: func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
				return nil, gonvml.ERROR_NOT_SUPPORTED
			},
		}
	}
	dev.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 7, gonvml.SUCCESS }
	dev.GetMigDeviceHandleByIndexFunc = func(j int) (gonvml.Device, gonvml.Return) {
		if j < 0 || j >= len(migs) {
			return nil, gonvml.ERROR_NOT_FOUND
		}
		return migs[j], gonvml.SUCCESS
	}
}

// gpmSample is what a simulated GPM sample records: which instance, when.
type gpmSample struct {
	key devKey
	at  time.Time
}

// serveGPM serves GPU Performance Monitoring as the driver does for MIG
// instances: supported from Hopper on; a sample records its instance and
// time, and GRAPHICS_UTIL (or SM_UTIL) between two samples is the
// instance's mean utilization over the simulated driver's one-second
// samples between them.
func (n *Node) serveGPM(srv *dgxa100.Server) {
	var mu sync.Mutex
	samples := map[gonvml.GpmSample]*gpmSample{}
	gpuIndex := func(d gonvml.Device) int {
		for i, dev := range srv.Devices {
			if dev == d {
				return i
			}
		}
		return -1
	}
	srv.GpmQueryDeviceSupportFunc = func(d gonvml.Device) (gonvml.GpmSupport, gonvml.Return) {
		arch, ret := d.GetArchitecture()
		if ret != gonvml.SUCCESS {
			return gonvml.GpmSupport{}, ret
		}
		sup := gonvml.GpmSupport{Version: gonvml.GPM_SUPPORT_VERSION}
		if arch >= gonvml.DEVICE_ARCH_HOPPER {
			sup.IsSupportedDevice = 1
		}
		return sup, gonvml.SUCCESS
	}
	srv.GpmSampleAllocFunc = func() (gonvml.GpmSample, gonvml.Return) {
		s := &mock.GpmSample{}
		mu.Lock()
		samples[s] = &gpmSample{key: devKey{-1, -1}}
		mu.Unlock()
		return s, gonvml.SUCCESS
	}
	srv.GpmSampleFreeFunc = func(s gonvml.GpmSample) gonvml.Return {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := samples[s]; !ok {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		delete(samples, s)
		return gonvml.SUCCESS
	}
	srv.GpmMigSampleGetFunc = func(d gonvml.Device, gi int, s gonvml.GpmSample) gonvml.Return {
		i := gpuIndex(d)
		j := gi - 1
		if i < 0 || j < 0 || j >= len(n.scenario.MIG[i]) {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		mu.Lock()
		defer mu.Unlock()
		smp, ok := samples[s]
		if !ok {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		smp.key, smp.at = devKey{i, j}, n.now()
		return gonvml.SUCCESS
	}
	srv.GpmMetricsGetFunc = func(m *gonvml.GpmMetricsGetType) gonvml.Return {
		mu.Lock()
		s1, ok1 := samples[m.Sample1]
		s2, ok2 := samples[m.Sample2]
		mu.Unlock()
		if !ok1 || !ok2 || s1.key != s2.key || s1.key.GPU < 0 || s2.at.Before(s1.at) {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		for k := 0; k < int(m.NumMetrics) && k < len(m.Metrics); k++ {
			switch gonvml.GpmMetricId(m.Metrics[k].MetricId) {
			case gonvml.GPM_METRIC_GRAPHICS_UTIL, gonvml.GPM_METRIC_SM_UTIL:
				m.Metrics[k].Value = n.meanUtilization(s1.key, s1.at, s2.at)
				m.Metrics[k].NvmlReturn = uint32(gonvml.SUCCESS)
			default:
				m.Metrics[k].NvmlReturn = uint32(gonvml.ERROR_NOT_SUPPORTED)
			}
		}
		return gonvml.SUCCESS
	}
}

// meanUtilization is a device's mean utilization over its one-second
// samples in (from, to]; the value at to when the interval holds none.
func (n *Node) meanUtilization(k devKey, from, to time.Time) float64 {
	var sum float64
	var count int
	for t := from.Truncate(samplePeriod).Add(samplePeriod); !t.After(to); t = t.Add(samplePeriod) {
		sum += math.Round(n.utilization(k, t))
		count++
	}
	if count == 0 {
		return math.Round(n.utilization(k, to))
	}
	return sum / float64(count)
}

// deviceID turns a scenario device entry into the ID the device plugin
// would give the kubelet: MIG instances by their UUID, under their profile's
// resource (mixed strategy) or nvidia.com/gpu (single strategy) alike.
func deviceID(d string) string {
	ref, _ := ParseDevice(d)
	if ref.MIG >= 0 {
		return MIGUUID(ref.GPU, ref.MIG)
	}
	if ref.Replica >= 0 {
		return fmt.Sprintf("%s::%d", UUID(ref.GPU), ref.Replica)
	}
	return UUID(ref.GPU)
}

func (n *Node) buildPodResources() (*podresourcesv1.ListPodResourcesResponse, *podresourcesv1.AllocatableResourcesResponse) {
	list := &podresourcesv1.ListPodResourcesResponse{}
	replicated := map[int]bool{}
	for _, p := range n.scenario.Pods {
		pr := &podresourcesv1.PodResources{Namespace: p.Namespace, Name: p.Name}
		for _, c := range p.Containers {
			cr := &podresourcesv1.ContainerResources{Name: c.Name}
			if c.Claim != "" {
				cr.DynamicResources = []*podresourcesv1.DynamicResource{n.claimResources(p.Namespace, c)}
			} else if len(c.Devices) > 0 {
				ids := make([]string, len(c.Devices))
				for k, d := range c.Devices {
					ids[k] = deviceID(d)
					if ref, _ := ParseDevice(d); ref.Replica >= 0 {
						replicated[ref.GPU] = true
					}
				}
				cr.Devices = []*podresourcesv1.ContainerDevices{{ResourceName: c.Resource, DeviceIds: ids}}
			}
			pr.Containers = append(pr.Containers, cr)
		}
		list.PodResources = append(list.PodResources, pr)
	}
	alloc := &podresourcesv1.AllocatableResourcesResponse{}
	if n.scenario.Allocatable != nil {
		names := make([]string, 0, len(n.scenario.Allocatable))
		for res := range n.scenario.Allocatable {
			names = append(names, res)
		}
		sort.Strings(names)
		for _, res := range names {
			ids := make([]string, 0, len(n.scenario.Allocatable[res]))
			for _, d := range n.scenario.Allocatable[res] {
				ids = append(ids, deviceID(d))
			}
			alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids})
		}
		return list, alloc
	}
	// Without an explicit list, every GPU neither shared nor MIG-enabled is
	// offered whole, and MIG instances under their profile's resource (the
	// device plugin's mixed strategy).
	var ids []string
	migIDs := map[string][]string{}
	dra := map[string]bool{} // published by the DRA driver, not the device plugin
	if n.scenario.DRA != nil {
		for _, d := range n.scenario.DRA.Devices {
			dra[d] = true
		}
	}
	for i := 0; i < n.scenario.GPUs; i++ {
		if profiles, ok := n.scenario.MIG[i]; ok {
			for j, p := range profiles {
				if !dra[fmt.Sprintf("%d/%d", i, j)] {
					migIDs["nvidia.com/mig-"+p] = append(migIDs["nvidia.com/mig-"+p], MIGUUID(i, j))
				}
			}
			continue
		}
		if !replicated[i] && !dra[fmt.Sprint(i)] {
			ids = append(ids, UUID(i))
		}
	}
	if len(ids) > 0 {
		alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: "nvidia.com/gpu", DeviceIds: ids})
	}
	names := make([]string, 0, len(migIDs))
	for res := range migIDs {
		names = append(names, res)
	}
	sort.Strings(names)
	for _, res := range names {
		alloc.Devices = append(alloc.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: migIDs[res]})
	}
	return list, alloc
}

// DRADeviceName is the name the scenario's DRA driver gives a device in
// its ResourceSlice: "gpu-3" for GPU 3, "gpu-2-mig-0" for instance 0 of GPU 2.
func DRADeviceName(d string) string {
	ref, _ := ParseDevice(d)
	if ref.MIG >= 0 {
		return fmt.Sprintf("gpu-%d-mig-%d", ref.GPU, ref.MIG)
	}
	return fmt.Sprintf("gpu-%d", ref.GPU)
}

// deviceUUID is the NVML UUID of a whole GPU or MIG instance entry.
func deviceUUID(d string) string {
	ref, _ := ParseDevice(d)
	if ref.MIG >= 0 {
		return MIGUUID(ref.GPU, ref.MIG)
	}
	return UUID(ref.GPU)
}

// claimResources is what the kubelet reports of a container's claim: the
// driver, this node's pool and each allocated device with its CDI device.
func (n *Node) claimResources(namespace string, c Container) *podresourcesv1.DynamicResource {
	dr := &podresourcesv1.DynamicResource{ClaimName: c.Claim, ClaimNamespace: namespace}
	for _, d := range c.Devices {
		dr.ClaimResources = append(dr.ClaimResources, &podresourcesv1.ClaimResource{
			DriverName: n.scenario.DRA.Driver,
			PoolName:   n.Name,
			DeviceName: DRADeviceName(d),
			CdiDevices: []*podresourcesv1.CDIDevice{{Name: "k8s." + n.scenario.DRA.Driver + "/gpu=" + deviceUUID(d)}},
		})
	}
	return dr
}

// List implements podresources.Source.
func (n *Node) List(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	return n.list, nil
}

// Allocatable implements podresources.Source.
func (n *Node) Allocatable(context.Context) (*podresourcesv1.AllocatableResourcesResponse, error) {
	return n.alloc, nil
}
