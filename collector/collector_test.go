package collector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// staticKubelet is a KubeletSource returning a fixed reply or error.
type staticKubelet struct {
	snap *podresources.Snapshot
	err  error
}

func (k staticKubelet) Read(context.Context) (*podresources.Snapshot, error) { return k.snap, k.err }
func (k staticKubelet) Errors() map[string]uint64 {
	if k.err != nil {
		return map[string]uint64{"unavailable": 1}
	}
	return nil
}

// dgxH100 returns a sampler over go-nvml's DGX H100 mock with two devices
// at fixed utilization and memory, polled once at a fixed instant.
func dgxH100(t *testing.T) (*nvml.Sampler, []string) {
	t.Helper()
	srv := dgxh100.New()
	srv.Devices = srv.Devices[:3]
	now := time.Unix(1_800_000_000, 0)
	var uuids []string
	for i, d := range srv.Devices {
		i, dev := i, d.(*server.Device)
		dev.UUID = fmt.Sprintf("GPU-00000000-0000-4000-8000-00000000010%d", i)
		uuids = append(uuids, dev.UUID)
		dev.GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			return gonvml.VALUE_TYPE_UNSIGNED_INT, []gonvml.Sample{
				{TimeStamp: uint64(now.Add(-2 * time.Second).UnixMicro()), SampleValue: nvml.EncodeUint32Sample(uint32(30 * i))},
				{TimeStamp: uint64(now.Add(-time.Second).UnixMicro()), SampleValue: nvml.EncodeUint32Sample(uint32(30*i + 10))},
			}, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: uint64(i+1) << 30}, gonvml.SUCCESS
		}
	}
	s := nvml.NewSampler(srv, nvml.Config{Window: time.Minute, Now: func() time.Time { return now }})
	s.Poll()
	return s, uuids
}

const goldenHeader = `
# HELP containerGpuDutyCycle Percentage of time over the duty-cycle window during which the GPU (or MIG instance) held by the container was busy (0-100).
# TYPE containerGpuDutyCycle gauge
# HELP containerGpuLimits GPUs limited for the container, per GPU resource.
# TYPE containerGpuLimits gauge
# HELP containerGpuRequests GPUs requested by the container, per GPU resource.
# TYPE containerGpuRequests gauge
# HELP containerGpumemoryTotalBytes GPU memory in bytes available to the container on the device (the GPU's, or the MIG instance's).
# TYPE containerGpumemoryTotalBytes gauge
# HELP containerGpumemoryUsedBytes GPU memory in bytes in use on the device (or MIG instance) held by the container.
# TYPE containerGpumemoryUsedBytes gauge
# HELP nodeGpuAllocatable GPUs Kubernetes can hand out on the node, per GPU resource.
# TYPE nodeGpuAllocatable gauge
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
# HELP nodeGpuDutyCycle Percentage of time over the duty-cycle window during which the device was busy (0-100), whether allocated or not.
# TYPE nodeGpuDutyCycle gauge
# HELP nodeGpumemoryTotalBytes GPU memory in bytes of the device.
# TYPE nodeGpumemoryTotalBytes gauge
# HELP nodeGpumemoryUsedBytes GPU memory in bytes in use on the device.
# TYPE nodeGpumemoryUsedBytes gauge
# HELP kube_gpu_exporter_up Whether the source answered in this scrape (1) or not (0).
# TYPE kube_gpu_exporter_up gauge
# HELP kube_gpu_exporter_unmatched_devices Device IDs the kubelet allocated that match no NVML device; such containers have no usage series.
# TYPE kube_gpu_exporter_unmatched_devices gauge
`

var goldenNames = []string{
	"containerGpuDutyCycle", "containerGpuLimits", "containerGpuRequests", "containerGpumemoryTotalBytes",
	"containerGpumemoryUsedBytes", "nodeGpuAllocatable", "nodeGpuCapacity", "nodeGpuDutyCycle",
	"nodeGpumemoryTotalBytes", "nodeGpumemoryUsedBytes", "kube_gpu_exporter_up", "kube_gpu_exporter_unmatched_devices",
}

func TestCollectGoldenDGXH100(t *testing.T) {
	s, u := dgxH100(t)
	kubelet := staticKubelet{snap: &podresources.Snapshot{
		Containers: []podresources.ContainerDevices{
			{Namespace: "ml", Pod: "train-0", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{u[0]}},
			{Namespace: "web", Pod: "a", Container: "c", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{u[1] + "::0"}},
			{Namespace: "web", Pod: "b", Container: "c", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{u[1] + "::1", "GPU-deadbeef-0000-4000-8000-000000000000"}},
		},
		Allocatable: map[string][]string{
			"nvidia.com/gpu":        {u[0], u[2]},
			"nvidia.com/gpu.shared": {u[1] + "::0", u[1] + "::1"},
		},
	}}
	c := New(Config{NodeName: "gpu-node-1"}, s, kubelet, nil)
	want := goldenHeader + `
containerGpuDutyCycle{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="a"} 35
containerGpuDutyCycle{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="b"} 35
containerGpuDutyCycle{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0"} 5
containerGpuLimits{container="c",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="a",resource="nvidia.com/gpu.shared"} 1
containerGpuLimits{container="c",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="b",resource="nvidia.com/gpu.shared"} 2
containerGpuLimits{container="main",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0",resource="nvidia.com/gpu"} 1
containerGpuRequests{container="c",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="a",resource="nvidia.com/gpu.shared"} 1
containerGpuRequests{container="c",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="b",resource="nvidia.com/gpu.shared"} 2
containerGpuRequests{container="main",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0",resource="nvidia.com/gpu"} 1
containerGpumemoryTotalBytes{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="a"} 8.589934592e+10
containerGpumemoryTotalBytes{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="b"} 8.589934592e+10
containerGpumemoryTotalBytes{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0"} 8.589934592e+10
containerGpumemoryUsedBytes{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="a"} 2.147483648e+09
containerGpumemoryUsedBytes{container="c",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="web",node="gpu-node-1",pod="b"} 2.147483648e+09
containerGpumemoryUsedBytes{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="gpu-node-1",pod="train-0"} 1.073741824e+09
nodeGpuAllocatable{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 2
nodeGpuAllocatable{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu.shared"} 2
nodeGpuCapacity{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 2
nodeGpuCapacity{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu.shared"} 2
nodeGpuDutyCycle{gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 5
nodeGpuDutyCycle{gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 35
nodeGpuDutyCycle{gpu_id="GPU-00000000-0000-4000-8000-000000000102",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 65
nodeGpumemoryTotalBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 8.589934592e+10
nodeGpumemoryTotalBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 8.589934592e+10
nodeGpumemoryTotalBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000102",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 8.589934592e+10
nodeGpumemoryUsedBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000100",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 1.073741824e+09
nodeGpumemoryUsedBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 2.147483648e+09
nodeGpumemoryUsedBytes{gpu_id="GPU-00000000-0000-4000-8000-000000000102",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="gpu-node-1"} 3.221225472e+09
kube_gpu_exporter_up{source="kubelet"} 1
kube_gpu_exporter_up{source="nvml"} 1
kube_gpu_exporter_unmatched_devices 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), goldenNames...); err != nil {
		t.Fatal(err)
	}
}

func TestCollectGoldenKubeletDown(t *testing.T) {
	s, _ := dgxH100(t)
	c := New(Config{NodeName: "gpu-node-1"}, s, staticKubelet{err: errors.New("connection refused")}, nil)
	want := `
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
nodeGpuCapacity{gpu_vendor="nvidia",node="gpu-node-1",resource="nvidia.com/gpu"} 3
# HELP kube_gpu_exporter_up Whether the source answered in this scrape (1) or not (0).
# TYPE kube_gpu_exporter_up gauge
kube_gpu_exporter_up{source="kubelet"} 0
kube_gpu_exporter_up{source="nvml"} 1
# HELP kube_gpu_exporter_errors_total Errors met reading a source, by reason.
# TYPE kube_gpu_exporter_errors_total counter
kube_gpu_exporter_errors_total{reason="unavailable",source="kubelet"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "nodeGpuCapacity", "nodeGpuAllocatable", "containerGpuDutyCycle", "containerGpuRequests", "kube_gpu_exporter_up", "kube_gpu_exporter_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "nodeGpuDutyCycle"); n != 3 {
		t.Fatalf("nodeGpuDutyCycle series = %d, want 3 while the kubelet is down", n)
	}
}

func TestCollectNVMLStale(t *testing.T) {
	s, _ := dgxH100(t)
	late := s.Snapshot().Taken.Add(time.Minute)
	c := New(Config{NodeName: "n", NVMLStaleAfter: 30 * time.Second, Now: func() time.Time { return late }}, s, nil, nil)
	want := `
# HELP kube_gpu_exporter_up Whether the source answered in this scrape (1) or not (0).
# TYPE kube_gpu_exporter_up gauge
kube_gpu_exporter_up{source="nvml"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "kube_gpu_exporter_up", "nodeGpuDutyCycle", "nodeGpuCapacity"); err != nil {
		t.Fatal(err)
	}
}

func TestCollectNoDescriptorsMissing(t *testing.T) {
	s, _ := dgxH100(t)
	c := New(Config{NodeName: "n"}, s, staticKubelet{snap: &podresources.Snapshot{}}, nil)
	if problems, err := testutil.CollectAndLint(c); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range problems {
			if !strings.Contains(p.Text, "camelCase") {
				t.Errorf("lint: %s: %s", p.Metric, p.Text)
			}
		}
	}
}
