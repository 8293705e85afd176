package collector

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// draSlices is a DRALookup over literal (driver, pool, device) -> UUID.
type draSlices map[[3]string]string

func (s draSlices) DRADeviceUUID(driver, pool, device string) (string, bool) {
	u, ok := s[[3]string{driver, pool, device}]
	return u, ok
}

// staticSpecs is a SpecSource returning fixed specs.
type staticSpecs struct{ specs *Specs }

func (s staticSpecs) Read(context.Context) (*Specs, error) { return s.specs, nil }
func (s staticSpecs) Errors() map[string]uint64            { return nil }

func draInputs() (*podresources.Snapshot, *Specs) {
	const drv = "gpu.nvidia.com"
	claim := func(ns, pod, ctr, claim, dev string) podresources.ContainerClaim {
		return podresources.ContainerClaim{Namespace: ns, Pod: pod, Container: ctr, ClaimName: claim, Driver: drv, Pool: "node-a", Device: dev}
	}
	kubelet := &podresources.Snapshot{
		Containers: []podresources.ContainerDevices{{Namespace: "plugin", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuid0}}},
		Claims: []podresources.ContainerClaim{
			claim("ml", "train", "main", "train-gpus", "gpu-1"),
			claim("ml", "train", "main", "train-gpus", "gpu-2"),
			claim("ml", "train", "sidecar", "train-gpus", "gpu-2"), // a claim shared by two containers
			claim("ml", "lost", "main", "lost-gpu", "gpu-9"),       // not in any slice
		},
	}
	specs := &Specs{
		NodeFound: true,
		Node:      []NodeResource{{Resource: "nvidia.com/gpu", Vendor: "nvidia", Capacity: 1, HasCapacity: true, Allocatable: 1, HasAllocatable: true}},
		DRA: draSlices{
			{drv, "node-a", "gpu-1"}: uuid1,
			{drv, "node-a", "gpu-2"}: uuid2,
		},
		DRANode:  []NodeResource{{Resource: drv, Vendor: "nvidia", Capacity: 2, HasCapacity: true, Allocatable: 2, HasAllocatable: true}},
		DRAUUIDs: map[string]bool{uuid1: true, uuid2: true},
	}
	return kubelet, specs
}

func TestJoinDRA(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	devs := []nvml.Reading{gpu(0, uuid0), gpu(1, uuid1), gpu(2, uuid2)}
	kubelet, specs := draInputs()
	v := Join(Inputs{Devices: devs, NVMLUp: true, Kubelet: kubelet, Specs: specs, Matcher: m})
	wantUsage := []string{"ml/train/main@" + uuid1, "ml/train/main@" + uuid2, "ml/train/sidecar@" + uuid2, "plugin/p/c@" + uuid0}
	if got := usageKeys(v); !reflect.DeepEqual(got, wantUsage) {
		t.Errorf("usage = %v\nwant %v", got, wantUsage)
	}
	if !reflect.DeepEqual(v.Unmatched, []string{"gpu.nvidia.com/node-a/gpu-9"}) {
		t.Errorf("unmatched = %v", v.Unmatched)
	}
	wantReq := []ContainerResource{
		{Namespace: "ml", Pod: "lost", Container: "main", Resource: "gpu.nvidia.com", Vendor: "nvidia", Request: 1, Limit: 1},
		{Namespace: "ml", Pod: "train", Container: "main", Resource: "gpu.nvidia.com", Vendor: "nvidia", Request: 2, Limit: 2},
		{Namespace: "ml", Pod: "train", Container: "sidecar", Resource: "gpu.nvidia.com", Vendor: "nvidia", Request: 1, Limit: 1},
		// Not in the (empty) pod specs: the kubelet's count.
		{Namespace: "plugin", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1, Limit: 1},
	}
	if !reflect.DeepEqual(v.Requests, wantReq) {
		t.Errorf("requests = %+v\nwant %+v", v.Requests, wantReq)
	}
	if len(v.Node) != 2 || v.Node[0].Resource != "gpu.nvidia.com" || v.Node[0].Capacity != 2 || v.Node[1].Resource != "nvidia.com/gpu" {
		t.Errorf("node = %+v", v.Node)
	}
	// The two holders of gpu-2 share it, as time-sliced replicas would.
	for _, a := range v.Attribution {
		if a.Device.UUID == uuid2 && a.Mode == "exclusive" {
			t.Errorf("gpu-2, held by two containers, attributed exclusively")
		}
	}

	// Without the Node object, capacity does not count DRA GPUs as
	// device-plugin GPUs.
	specs.NodeFound = false
	v = Join(Inputs{Devices: devs, NVMLUp: true, Kubelet: kubelet, Specs: specs, Matcher: m})
	want := []NodeResource{
		{Resource: "gpu.nvidia.com", Vendor: "nvidia", Capacity: 2, HasCapacity: true, Allocatable: 2, HasAllocatable: true},
		{Resource: "nvidia.com/gpu", Vendor: "nvidia", Capacity: 1, HasCapacity: true},
	}
	if !reflect.DeepEqual(v.Node, want) {
		t.Errorf("fallback node = %+v\nwant %+v", v.Node, want)
	}

	// Without the slices, claimed devices cannot be resolved: no usage and
	// nothing unmatched, but the requests are still counted.
	specs.DRA = nil
	v = Join(Inputs{Devices: devs, NVMLUp: true, Kubelet: kubelet, Specs: specs, Matcher: m})
	if got := usageKeys(v); len(got) != 1 || len(v.Unmatched) != 0 || len(v.Requests) != 4 {
		t.Errorf("without slices: usage %v, unmatched %v, %d requests", got, v.Unmatched, len(v.Requests))
	}
}

func TestCollectDRA(t *testing.T) {
	s, u := dgxH100(t)
	kubelet, specs := draInputs()
	kubelet.Containers = nil
	specs.DRA = draSlices{{"gpu.nvidia.com", "node-a", "gpu-1"}: u[1], {"gpu.nvidia.com", "node-a", "gpu-2"}: u[2]}
	c := New(Config{NodeName: "dra-node"}, s, staticKubelet{snap: kubelet}, staticSpecs{specs})
	want := `
# HELP containerGpuRequests GPUs requested by the container, per GPU resource.
# TYPE containerGpuRequests gauge
containerGpuRequests{container="main",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="lost",resource="gpu.nvidia.com"} 1
containerGpuRequests{container="main",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="train",resource="gpu.nvidia.com"} 2
containerGpuRequests{container="sidecar",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="train",resource="gpu.nvidia.com"} 1
# HELP nodeGpuCapacity GPUs on the node, per GPU resource.
# TYPE nodeGpuCapacity gauge
nodeGpuCapacity{gpu_vendor="nvidia",node="dra-node",resource="gpu.nvidia.com"} 2
nodeGpuCapacity{gpu_vendor="nvidia",node="dra-node",resource="nvidia.com/gpu"} 1
# HELP containerGpuDutyCycle Percentage of time over the duty-cycle window during which the GPU (or MIG instance) held by the container was busy (0-100).
# TYPE containerGpuDutyCycle gauge
containerGpuDutyCycle{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000101",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="train"} 35
containerGpuDutyCycle{container="main",gpu_id="GPU-00000000-0000-4000-8000-000000000102",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="train"} 65
containerGpuDutyCycle{container="sidecar",gpu_id="GPU-00000000-0000-4000-8000-000000000102",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",namespace="ml",node="dra-node",pod="train"} 65
# HELP kube_gpu_exporter_unmatched_devices Device IDs the kubelet allocated that match no NVML device; such containers have no usage series.
# TYPE kube_gpu_exporter_unmatched_devices gauge
kube_gpu_exporter_unmatched_devices 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "containerGpuRequests", "nodeGpuCapacity", "containerGpuDutyCycle", "kube_gpu_exporter_unmatched_devices"); err != nil {
		t.Fatal(err)
	}
}
