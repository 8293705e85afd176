package collector

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func migInstanceUUID(j int) string { return fmt.Sprintf("MIG-00000000-0000-4000-9001-%012d", j) }

// migH100 is a sampler over a two-GPU DGX H100 mock: GPU 0 whole, GPU 1
// MIG-enabled with seven 1g.10gb instances (GPU instance IDs 7-13), instance
// j using j+1 GiB. GPM is not offered, so instances have memory only.
func migH100(t *testing.T) (*nvml.Sampler, string, string) {
	t.Helper()
	srv := dgxh100.New()
	srv.Devices = srv.Devices[:2]
	srv.GpmQueryDeviceSupportFunc = func(gonvml.Device) (gonvml.GpmSupport, gonvml.Return) {
		return gonvml.GpmSupport{}, gonvml.SUCCESS
	}
	now := time.Unix(1_800_000_000, 0)
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		dev.UUID = fmt.Sprintf("GPU-00000000-0000-4000-8000-00000000030%d", i)
		dev.PciBusID = fmt.Sprintf("00000000:%02X:00.0", 0x18+i)
		dev.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
			var p gonvml.PciInfo
			for k := 0; k < len(dev.PciBusID); k++ {
				p.BusId[k] = int8(dev.PciBusID[k])
			}
			return p, gonvml.SUCCESS
		}
		dev.GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			return gonvml.VALUE_TYPE_UNSIGNED_INT, []gonvml.Sample{{TimeStamp: uint64(now.Add(-time.Second).UnixMicro()), SampleValue: nvml.EncodeUint32Sample(20)}}, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: 28 << 30}, gonvml.SUCCESS
		}
	}
	parent := srv.Devices[1].(*server.Device)
	parent.MigMode = gonvml.DEVICE_MIG_ENABLE
	var migs []gonvml.Device
	for j := 0; j < 7; j++ {
		migs = append(migs, &mock.Device{
			GetUUIDFunc:              func() (string, gonvml.Return) { return migInstanceUUID(j), gonvml.SUCCESS },
			GetGpuInstanceIdFunc:     func() (int, gonvml.Return) { return 7 + j, gonvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, gonvml.Return) { return 0, gonvml.SUCCESS },
			GetNameFunc:              func() (string, gonvml.Return) { return "NVIDIA H100 80GB HBM3 MIG 1g.10gb", gonvml.SUCCESS },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				return gonvml.Memory{Total: 10 << 30, Used: uint64(j+1) << 30}, gonvml.SUCCESS
			},
		})
	}
	parent.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 7, gonvml.SUCCESS }
	parent.GetMigDeviceHandleByIndexFunc = func(j int) (gonvml.Device, gonvml.Return) {
		if j < 0 || j >= len(migs) {
			return nil, gonvml.ERROR_NOT_FOUND
		}
		return migs[j], gonvml.SUCCESS
	}
	s := nvml.NewSampler(srv, nvml.Config{Window: time.Minute, Now: func() time.Time { return now }})
	s.Poll()
	return s, srv.Devices[0].(*server.Device).UUID, parent.UUID
}

func TestCollectMIGMixedStrategy(t *testing.T) {
	s, whole, parent := migH100(t)
	var migIDs []string
	for j := 0; j < 7; j++ {
		migIDs = append(migIDs, migInstanceUUID(j))
	}
	kubelet := staticKubelet{snap: &podresources.Snapshot{
		Containers: []podresources.ContainerDevices{
			{Namespace: "ml", Pod: "big", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{whole}},
			{Namespace: "ml", Pod: "small-0", Container: "main", Resource: "nvidia.com/mig-1g.10gb", DeviceIDs: []string{migIDs[0]}},
			{Namespace: "ml", Pod: "small-6", Container: "main", Resource: "nvidia.com/mig-1g.10gb", DeviceIDs: []string{migIDs[6]}},
		},
		Allocatable: map[string][]string{"nvidia.com/gpu": {whole}, "nvidia.com/mig-1g.10gb": migIDs},
	}}
	c := New(Config{NodeName: "h100-node"}, s, kubelet, nil)

	// Capacity counts each instance once and not their parent.
	want := `
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
nodeGpuCapacity{gpu_vendor="nvidia",node="h100-node",resource="nvidia.com/gpu"} 1
nodeGpuCapacity{gpu_vendor="nvidia",node="h100-node",resource="nvidia.com/mig-1g.10gb"} 7
# HELP containerGpumemoryUsedBytes GPU memory in bytes in use on the device (or MIG instance) held by the container.
# TYPE containerGpumemoryUsedBytes gauge
containerGpumemoryUsedBytes{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000300",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="big"} 3.0064771072e+10
containerGpumemoryUsedBytes{container="main",gpu_id="MIG-00000000-0000-4000-9001-000000000000",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="small-0"} 1.073741824e+09
containerGpumemoryUsedBytes{container="main",gpu_id="MIG-00000000-0000-4000-9001-000000000006",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="small-6"} 7.516192768e+09
# HELP containerGpumemoryTotalBytes GPU memory in bytes available to the container on the device (the GPU's, or the MIG instance's).
# TYPE containerGpumemoryTotalBytes gauge
containerGpumemoryTotalBytes{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000300",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="big"} 8.589934592e+10
containerGpumemoryTotalBytes{container="main",gpu_id="MIG-00000000-0000-4000-9001-000000000000",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="small-0"} 1.073741824e+10
containerGpumemoryTotalBytes{container="main",gpu_id="MIG-00000000-0000-4000-9001-000000000006",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="h100-node",pod="small-6"} 1.073741824e+10
# HELP nodeGpuDutyCycle Percentage of time over the duty-cycle window during which the device was busy (0-100), whether allocated or not.
# TYPE nodeGpuDutyCycle gauge
nodeGpuDutyCycle{gpu_id="GPU-00000000-0000-4000-8000-000000000300",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="h100-node"} 20
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "nodeGpuCapacity", "containerGpumemoryUsedBytes", "containerGpumemoryTotalBytes", "nodeGpuDutyCycle"); err != nil {
		t.Fatal(err)
	}

	// Every device has an info series; instances name their parent.
	var info strings.Builder
	info.WriteString("# HELP kube_gpu_device_info One series per device NVML reports, GPU or MIG instance: the MIG instance's parent GPU, profile and GPU/compute instance IDs (empty on whole GPUs) and the PCI address, for grouping by gpu_id.\n# TYPE kube_gpu_device_info gauge\n")
	fmt.Fprintf(&info, "kube_gpu_device_info{compute_instance_id=\"\",gpu_id=%q,gpu_instance_id=\"\",gpu_model=\"NVIDIA H100 80GB HBM3\",gpu_vendor=\"nvidia\",mig_profile=\"\",node=\"h100-node\",parent_gpu_id=\"\",pci_bus_id=\"00000000:18:00.0\"} 1\n", whole)
	fmt.Fprintf(&info, "kube_gpu_device_info{compute_instance_id=\"\",gpu_id=%q,gpu_instance_id=\"\",gpu_model=\"NVIDIA H100 80GB HBM3\",gpu_vendor=\"nvidia\",mig_profile=\"\",node=\"h100-node\",parent_gpu_id=\"\",pci_bus_id=\"00000000:19:00.0\"} 1\n", parent)
	for j := 0; j < 7; j++ {
		fmt.Fprintf(&info, "kube_gpu_device_info{compute_instance_id=\"0\",gpu_id=%q,gpu_instance_id=\"%d\",gpu_model=\"NVIDIA H100 80GB HBM3\",gpu_vendor=\"nvidia\",mig_profile=\"1g.10gb\",node=\"h100-node\",parent_gpu_id=%q,pci_bus_id=\"00000000:19:00.0\"} 1\n", migIDs[j], 7+j, parent)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(info.String()), "kube_gpu_device_info"); err != nil {
		t.Fatal(err)
	}
	// The MIG-enabled parent keeps its memory series, with no duty cycle.
	if n := testutil.CollectAndCount(c, "nodeGpumemoryTotalBytes"); n != 9 {
		t.Errorf("nodeGpumemoryTotalBytes series = %d, want 9 (2 GPUs, 7 instances)", n)
	}
}

func TestJoinMIGCapacity(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	parent := gpu(1, uuid1)
	parent.MIGEnabled = true
	devs := []nvml.Reading{gpu(0, uuid0), parent}
	var migIDs []string
	for j := 0; j < 7; j++ {
		id := migInstanceUUID(j)
		migIDs = append(migIDs, id)
		devs = append(devs, nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: id, ParentUUID: uuid1, Index: 1, Minor: 1, GPUInstance: 7 + j, ComputeInstance: 0, Profile: "1g.10gb", MemoryTotal: 10 << 30}})
	}
	res := func(name string, c, a float64, ha bool) NodeResource {
		return NodeResource{Resource: name, Vendor: "nvidia", Capacity: c, HasCapacity: true, Allocatable: a, HasAllocatable: ha}
	}
	tests := []struct {
		name    string
		kubelet *podresources.Snapshot
		want    []NodeResource
	}{
		{"mixed strategy", &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": {uuid0}, "nvidia.com/mig-1g.10gb": migIDs}},
			[]NodeResource{res("nvidia.com/gpu", 1, 1, true), res("nvidia.com/mig-1g.10gb", 7, 7, true)}},
		{"mixed strategy, one instance unhealthy", &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": {uuid0}, "nvidia.com/mig-1g.10gb": migIDs[1:]}},
			[]NodeResource{res("nvidia.com/gpu", 1, 1, true), res("nvidia.com/mig-1g.10gb", 7, 6, true)}},
		{"single strategy: instances offered as nvidia.com/gpu", &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": append([]string{uuid0}, migIDs...)}},
			[]NodeResource{res("nvidia.com/gpu", 8, 8, true)}},
		{"NVML only", nil, []NodeResource{
			{Resource: "nvidia.com/gpu", Vendor: "nvidia", Capacity: 1, HasCapacity: true},
			{Resource: "nvidia.com/mig-1g.10gb", Vendor: "nvidia", Capacity: 7, HasCapacity: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Join(Inputs{Devices: devs, NVMLUp: true, Kubelet: tt.kubelet, Matcher: m}).Node
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("node = %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// Single strategy: MIG UUIDs under nvidia.com/gpu resolve to instances.
	v := Join(Inputs{Devices: devs, NVMLUp: true, Matcher: m, Kubelet: &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "a", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{migIDs[3]}},
	}}})
	if got := usageKeys(v); !reflect.DeepEqual(got, []string{"a/p/c@" + migIDs[3]}) || len(v.Unmatched) != 0 {
		t.Errorf("single-strategy usage = %v, unmatched %v", got, v.Unmatched)
	}
}
