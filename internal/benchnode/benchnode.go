// Package benchnode builds the simulated nodes the performance benchmarks
// scrape: a go-nvml DGX A100 mock (whole GPUs, time-sliced GPUs or MIG
// instances) polled once by the real nvml.Sampler, and a pod-resources reply
// served on a real unix socket to the real podresources.Client. The numbers
// the benchmarks report are therefore those of the exporter's own code paths,
// with only the hardware and the kubelet replaced.
package benchnode

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// Sharing is how a case hands its GPUs to containers.
type Sharing int

const (
	// Whole gives each GPU-holding container one whole GPU.
	Whole Sharing = iota
	// TimeSliced advertises Replicas replicas of every GPU, each held by one
	// container, as the device plugin's time-slicing does.
	TimeSliced
	// MIG partitions every GPU into MIGPerGPU instances, each held by one
	// container (the device plugin's "mixed" strategy).
	MIG
)

// MIGPerGPU is how many 1g.5gb instances an A100-SXM4-40GB holds.
const MIGPerGPU = 7

// Case is one simulated node.
type Case struct {
	// Name is the benchmark's sub-name.
	Name string
	// GPUs is the number of physical GPUs.
	GPUs int
	// Sharing says what containers hold.
	Sharing Sharing
	// Replicas is the number of time-slicing replicas per GPU.
	Replicas int
	// Pods is the number of pods on the node; pods beyond those holding GPUs
	// have two containers without devices, as most pods on a node do.
	Pods int
	// API adds the Kubernetes API as a source (APICases, StartAPI).
	API bool
}

// Cases are the benchmarked nodes: the three ways of sharing 8 GPUs on a
// node at the kubelet's default pod limit (110, or every replica holder when
// that is more), and each of them again with 1,000 pods.
func Cases() []Case {
	base := []Case{
		{Name: "whole-8gpu", GPUs: 8, Sharing: Whole},
		{Name: "timeslice-8x48", GPUs: 8, Sharing: TimeSliced, Replicas: 48},
		{Name: "mig-8x7", GPUs: 8, Sharing: MIG},
	}
	var out []Case
	for _, c := range base {
		c.Pods = max(110, c.Holders())
		c.Name = fmt.Sprintf("%s-%dpods", c.Name, c.Pods)
		out = append(out, c)
	}
	for _, c := range base {
		c.Pods = 1000
		c.Name = fmt.Sprintf("%s-%dpods", c.Name, c.Pods)
		out = append(out, c)
	}
	return out
}

// Holders is the number of containers (one per pod) holding a GPU, a
// replica or a MIG instance.
func (c Case) Holders() int {
	switch c.Sharing {
	case TimeSliced:
		return c.GPUs * c.Replicas
	case MIG:
		return c.GPUs * MIGPerGPU
	default:
		return c.GPUs
	}
}

// Resource is the extended resource the holders requested.
func (c Case) Resource() string {
	if c.Sharing == MIG {
		return "nvidia.com/mig-1g.5gb"
	}
	return "nvidia.com/gpu"
}

// GPUUUID is the UUID of physical GPU i.
func GPUUUID(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

// MIGUUID is the UUID of instance j of GPU i.
func MIGUUID(i, j int) string { return fmt.Sprintf("MIG-00000000-0000-4000-9000-%06d%06d", i, j) }

// Now is the fixed instant the NVML mock and the sampler agree on.
var Now = time.Unix(1_800_000_000, 0)

// DeviceIDs are the kubelet device IDs in allocation order: holder k holds
// DeviceIDs()[k].
func (c Case) DeviceIDs() []string {
	var ids []string
	for i := 0; i < c.GPUs; i++ {
		switch c.Sharing {
		case TimeSliced:
			for r := 0; r < c.Replicas; r++ {
				ids = append(ids, fmt.Sprintf("%s::%d", GPUUUID(i), r))
			}
		case MIG:
			for j := 0; j < MIGPerGPU; j++ {
				ids = append(ids, MIGUUID(i, j))
			}
		default:
			ids = append(ids, GPUUUID(i))
		}
	}
	return ids
}

// NVML returns a DGX A100 mock with the case's GPUs, each reporting 16
// one-second utilization samples and its memory in use; in MIG mode every
// GPU carries MIGPerGPU instances. Every utilization and memory read adds one
// to calls, so tests can show who reads NVML.
func (c Case) NVML(calls *atomic.Uint64) gonvml.Interface {
	srv := dgxa100.New()
	for len(srv.Devices) < c.GPUs {
		srv.Devices = append(srv.Devices, dgxa100.NewDevice(len(srv.Devices)))
	}
	srv.Devices = srv.Devices[:c.GPUs]
	for i, d := range srv.Devices {
		i, dev := i, d.(*server.Device)
		dev.UUID = GPUUUID(i)
		dev.GetSamplesFunc = func(_ gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			calls.Add(1)
			var out []gonvml.Sample
			for s := 15; s >= 0; s-- {
				ts := uint64(Now.Add(-time.Duration(s) * time.Second).UnixMicro())
				if ts > last {
					out = append(out, gonvml.Sample{TimeStamp: ts, SampleValue: nvml.EncodeUint32Sample(uint32((10*i + s) % 101))})
				}
			}
			if len(out) == 0 {
				return gonvml.VALUE_TYPE_UNSIGNED_INT, nil, gonvml.ERROR_NOT_FOUND
			}
			return gonvml.VALUE_TYPE_UNSIGNED_INT, out, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			calls.Add(1)
			used := uint64(i+1) << 30
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: used, Free: dev.MemoryInfo.Total - used}, gonvml.SUCCESS
		}
		// Every telemetry and health family, so benchmarks include them.
		nvmltest.Apply(&dev.Device, nvmltest.Profile{
			PowerMilliwatts: nvmltest.U32(300_000 + 1000*uint32(i)), PowerLimitMilliwatts: nvmltest.U32(400_000),
			EnergyMillijoules: func() uint64 { return 1_000_000 * uint64(i+1) },
			TempGPU:           nvmltest.U32(60), TempMemory: nvmltest.U32(70),
			SMClockMHz: nvmltest.U32(1410), MemClockMHz: nvmltest.U32(1215), SMMaxMHz: nvmltest.U32(1410), MemMaxMHz: nvmltest.U32(1215),
			ClockEvents:     nvmltest.U64(gonvml.ClocksEventReasonSwPowerCap),
			ClockEventNanos: map[uint32]uint64{gonvml.FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: 1e9},
			MemoryUtil:      nvmltest.U32(30), Encoder: nvmltest.U32(0), Decoder: nvmltest.U32(0), PCIeReplays: nvmltest.Int(0),
			ECC: &[2][2]uint64{}, RemappedRows: &[2]int{}, RecoveryAction: nvmltest.U32(0),
		})
		if c.Sharing != MIG {
			continue
		}
		dev.MigMode = gonvml.DEVICE_MIG_ENABLE
		migs := make([]gonvml.Device, MIGPerGPU)
		for j := range migs {
			j := j
			migs[j] = &mock.Device{
				GetUUIDFunc:              func() (string, gonvml.Return) { return MIGUUID(i, j), gonvml.SUCCESS },
				GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return 7 + j, gonvml.SUCCESS },
				GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
				GetNameFunc:              func() (string, gonvml.Return) { return "NVIDIA A100-SXM4-40GB MIG 1g.5gb", gonvml.SUCCESS },
				GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
					calls.Add(1)
					return gonvml.Memory{Total: 5 << 30, Used: uint64(j+1) << 28}, gonvml.SUCCESS
				},
			}
		}
		dev.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return MIGPerGPU, gonvml.SUCCESS }
		dev.GetMigDeviceHandleByIndexFunc = func(j int) (gonvml.Device, gonvml.Return) {
			if j < 0 || j >= len(migs) {
				return nil, gonvml.ERROR_NOT_FOUND
			}
			return migs[j], gonvml.SUCCESS
		}
	}
	return srv
}

// PodResources returns the kubelet's List and GetAllocatableResources
// replies: Holders() single-container pods holding one device ID each, then
// pods without devices up to Pods.
func (c Case) PodResources() (*podresourcesv1.ListPodResourcesResponse, *podresourcesv1.AllocatableResourcesResponse) {
	ids := c.DeviceIDs()
	list := &podresourcesv1.ListPodResourcesResponse{}
	for k, id := range ids {
		list.PodResources = append(list.PodResources, &podresourcesv1.PodResources{
			Namespace: fmt.Sprintf("team-%02d", k%12),
			Name:      fmt.Sprintf("gpu-worker-%04d-7f9c4d8b6-x%03d", k, k%1000),
			Containers: []*podresourcesv1.ContainerResources{{
				Name:    "main",
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: c.Resource(), DeviceIds: []string{id}}},
			}},
		})
	}
	for k := len(ids); k < c.Pods; k++ {
		list.PodResources = append(list.PodResources, &podresourcesv1.PodResources{
			Namespace: fmt.Sprintf("apps-%02d", k%20),
			Name:      fmt.Sprintf("web-%04d-5d7f8c9b4-q%03d", k, k%1000),
			Containers: []*podresourcesv1.ContainerResources{
				{Name: "app", CpuIds: []int64{int64(k % 64)}},
				{Name: "istio-proxy"},
			},
		})
	}
	alloc := &podresourcesv1.AllocatableResourcesResponse{
		Devices: []*podresourcesv1.ContainerDevices{{ResourceName: c.Resource(), DeviceIds: ids}},
	}
	return list, alloc
}

// Node is a started case.
type Node struct {
	// Sampler has polled the mock once and is not running: scrapes only read
	// its snapshot.
	Sampler *nvml.Sampler
	// Kubelet is the real client of the served replies.
	Kubelet   *podresources.Client
	server    *fakekubelet.Server
	nvmlCalls *atomic.Uint64
}

// NVMLCalls is how many utilization and memory reads the NVML mock has
// answered, from the sampler or anyone else.
func (n *Node) NVMLCalls() uint64 { return n.nvmlCalls.Load() }

// Start polls the case's NVML once and serves its pod resources on a socket
// in dir, read by a client that reuses a reply for cacheTTL.
func Start(c Case, dir string, cacheTTL time.Duration) (*Node, error) {
	calls := new(atomic.Uint64)
	lib := c.NVML(calls)
	nvmltest.NoEvents(&lib.(*server.Server).Interface)
	s := nvml.NewSampler(lib, nvml.Config{Window: time.Minute, Now: func() time.Time { return Now },
		Telemetry: true, Health: true, Events: true, Profiling: true})
	s.Poll()
	snap := s.Snapshot()
	want := c.GPUs
	if c.Sharing == MIG {
		want += c.GPUs * MIGPerGPU
	}
	if !snap.Up || len(snap.Devices) != want {
		return nil, fmt.Errorf("sampler saw %d devices (up=%v, want %d): %w", len(snap.Devices), snap.Up, want, snap.Err)
	}
	list, alloc := c.PodResources()
	srv := fakekubelet.NewServer(testkit.NewKubelet(list, alloc))
	socket := filepath.Join(dir, "kubelet.sock")
	if err := srv.Listen(socket); err != nil {
		return nil, err
	}
	cl, err := podresources.New(podresources.Config{Socket: socket, Timeout: 10 * time.Second, CacheTTL: cacheTTL})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &Node{Sampler: s, Kubelet: cl, server: srv, nvmlCalls: calls}, nil
}

// Close stops the client and the server.
func (n *Node) Close() {
	n.Kubelet.Close()
	n.server.Stop()
}
