package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// TestDeviceTaints serves the taints of the node's DRA GPU devices: one the
// driver set on a GPU NVML sees, one a DeviceTaintRule put on it, and one on
// a device whose slice names no NVML UUID.
func TestDeviceTaints(t *testing.T) {
	devs := []nvml.Reading{gpu(0, uuid0), gpu(1, uuid1)}
	dt := func(dev, uuid, key, value, effect, rule string) kube.DRADeviceTaint {
		return kube.DRADeviceTaint{DRADevice: kube.DRADevice{Driver: "gpu.nvidia.com", Pool: "node-a", Device: dev},
			UUID: uuid, Key: key, Value: value, Effect: effect, Rule: rule}
	}
	specs := &Specs{DRATaints: []kube.DRADeviceTaint{
		dt("gpu-1", uuid1, "gpu.nvidia.com/xid", "79", "NoExecute", ""),
		dt("gpu-1", uuid1, "drain", "", "NoSchedule", "drain-gpu-1"),
		dt("gpu-7", "", "firmware", "old", "None", "pool"),
	}}
	c := New(Config{NodeName: "n"}, staticNVML(devs), staticKubelet{snap: &podresources.Snapshot{}}, staticSpecs{specs})
	want := `
# HELP kube_gpu_dra_device_taint ` + deviceTaintFamilies[0].Help + `
# TYPE kube_gpu_dra_device_taint gauge
kube_gpu_dra_device_taint{device="gpu-1",driver="gpu.nvidia.com",effect="NoExecute",gpu_id="` + uuid1 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",key="gpu.nvidia.com/xid",node="n",pool="node-a",rule="",value="79"} 1
kube_gpu_dra_device_taint{device="gpu-1",driver="gpu.nvidia.com",effect="NoSchedule",gpu_id="` + uuid1 + `",gpu_model="NVIDIA A100-SXM4-40GB",gpu_vendor="nvidia",key="drain",node="n",pool="node-a",rule="drain-gpu-1",value=""} 1
kube_gpu_dra_device_taint{device="gpu-7",driver="gpu.nvidia.com",effect="None",gpu_id="",gpu_model="",gpu_vendor="nvidia",key="firmware",node="n",pool="node-a",rule="pool",value="old"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "kube_gpu_dra_device_taint"); err != nil {
		t.Error(err)
	}
}
