package collector

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// staticNVML is an NVMLSource answering fixed readings.
type staticNVML []nvml.Reading

func (s staticNVML) Read(context.Context) (*nvml.Snapshot, error) {
	return &nvml.Snapshot{Up: true, Devices: s}, nil
}
func (staticNVML) Errors() map[string]uint64 { return nil }

// TestKubeletHealth serves the kubelet's device health per container next
// to NVML's: a device-plugin GPU, a time-slicing replica, a DRA claim's
// device resolved through the ResourceSlices, an AMD GPU NVML cannot see,
// and a claim entry not shaped as the API documents (dropped).
func TestKubeletHealth(t *testing.T) {
	devs := []nvml.Reading{gpu(0, uuid0), gpu(1, uuid1), gpu(2, uuid2)}
	h := func(pod, ctr, res, id, health string) kube.ContainerDeviceHealth {
		return kube.ContainerDeviceHealth{Namespace: "ml", Pod: pod, Container: ctr, Resource: res, ResourceID: id, Health: health}
	}
	specs := &Specs{
		DRA: draSlices{{"gpu.nvidia.com", "node-a", "gpu-2"}: uuid2},
		DeviceHealth: []kube.ContainerDeviceHealth{
			h("train", "main", "nvidia.com/gpu", uuid0, "Unhealthy"),
			h("shared", "a", "nvidia.com/gpu.shared", uuid1+"::3", "Healthy"),
			h("dra", "main", "claim:gpus/gpu", "gpu.nvidia.com/node-a/gpu-2", "Unknown"),
			h("amd", "main", "amd.com/gpu", "0000:c1:00.0", "Healthy"),
			h("dra", "main", "claim:gpus/gpu", "gpu.nvidia.com", "Healthy"),
			h("odd", "main", "nvidia.com/gpu", uuid2, "Degraded"),
		},
	}
	kubelet := &podresources.Snapshot{}
	c := New(Config{NodeName: "n", Health: true}, staticNVML(devs), staticKubelet{snap: kubelet}, staticSpecs{specs})
	want := `
# HELP kube_gpu_container_kubelet_health_status ` + kubeletHealthFamilies[0].Help + `
# TYPE kube_gpu_container_kubelet_health_status gauge
kube_gpu_container_kubelet_health_status{container="main",device_id="0000:c1:00.0",gpu_id="",gpu_model="",gpu_vendor="amd",namespace="ml",node="n",pod="amd",resource="amd.com/gpu",status="healthy"} 1
kube_gpu_container_kubelet_health_status{container="main",device_id="gpu.nvidia.com/node-a/gpu-2",gpu_id="` + uuid2 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",namespace="ml",node="n",pod="dra",resource="gpu.nvidia.com",status="unknown"} 1
kube_gpu_container_kubelet_health_status{container="main",device_id="` + uuid2 + `",gpu_id="` + uuid2 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",namespace="ml",node="n",pod="odd",resource="nvidia.com/gpu",status="unknown"} 1
kube_gpu_container_kubelet_health_status{container="a",device_id="` + uuid1 + `::3",gpu_id="` + uuid1 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",namespace="ml",node="n",pod="shared",resource="nvidia.com/gpu.shared",status="healthy"} 1
kube_gpu_container_kubelet_health_status{container="main",device_id="` + uuid0 + `",gpu_id="` + uuid0 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",namespace="ml",node="n",pod="train",resource="nvidia.com/gpu",status="unhealthy"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "kube_gpu_container_kubelet_health_status"); err != nil {
		t.Error(err)
	}
	// Without the health switch the family is not served.
	off := New(Config{NodeName: "n"}, staticNVML(devs), staticKubelet{snap: kubelet}, staticSpecs{specs})
	if n := testutil.CollectAndCount(off, "kube_gpu_container_kubelet_health_status"); n != 0 {
		t.Errorf("%d series with --no-collector.health", n)
	}
}
