package collector

import (
	"reflect"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
)

// workloadMap is a kube.WorkloadLookup over literal data.
type workloadMap map[string]kube.Workload

func (m workloadMap) PodWorkload(ns, pod string) (kube.Workload, bool) {
	w, ok := m[ns+"/"+pod]
	return w, ok
}

func TestPodWorkloads(t *testing.T) {
	pods := []PodResource{
		{Namespace: "ml", Pod: "a", Resource: "gpu.nvidia.com"},
		{Namespace: "ml", Pod: "a", Resource: "nvidia.com/gpu"},
		{Namespace: "ml", Pod: "b", Resource: "nvidia.com/gpu"},
		{Namespace: "ml", Pod: "new", Resource: "nvidia.com/gpu"}, // only the kubelet knows it
		{Namespace: "web", Pod: "a", Resource: "nvidia.com/gpu"},
	}
	lookup := workloadMap{
		"ml/a": {Kind: "JobSet", Name: "llama"}, "ml/b": {Kind: "JobSet", Name: "llama"},
		"web/a": {Kind: "Deployment", Name: "vllm"}, "ml/cpu-only": {Kind: "Pod", Name: "cpu-only"},
	}
	want := []PodWorkload{
		{Namespace: "ml", Pod: "a", Workload: kube.Workload{Kind: "JobSet", Name: "llama"}},
		{Namespace: "ml", Pod: "b", Workload: kube.Workload{Kind: "JobSet", Name: "llama"}},
		{Namespace: "web", Pod: "a", Workload: kube.Workload{Kind: "Deployment", Name: "vllm"}},
	}
	if got := podWorkloads(&Specs{Workloads: lookup}, pods); !reflect.DeepEqual(got, want) {
		t.Errorf("podWorkloads =\n%+v\nwant\n%+v", got, want)
	}
	for _, specs := range []*Specs{nil, {}} {
		if got := podWorkloads(specs, pods); got != nil {
			t.Errorf("without a lookup: %+v", got)
		}
	}
}
