package collector

import (
	"reflect"
	"testing"
)

func TestPodRequests(t *testing.T) {
	specs := []PodResource{{Namespace: "ml", Pod: "a", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1}}
	rows := []ContainerResource{
		// Known to the specs: their effective value stands.
		{Namespace: "ml", Pod: "a", Container: "setup", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1},
		{Namespace: "ml", Pod: "a", Container: "main", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1},
		// A DRA claim of the same pod and a pod only the kubelet knows: summed.
		{Namespace: "ml", Pod: "a", Container: "main", Resource: "gpu.nvidia.com", Vendor: "nvidia", Request: 1},
		{Namespace: "ml", Pod: "b", Container: "x", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 2},
		{Namespace: "ml", Pod: "b", Container: "y", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1},
	}
	want := []PodResource{
		{Namespace: "ml", Pod: "a", Resource: "gpu.nvidia.com", Vendor: "nvidia", Request: 1},
		{Namespace: "ml", Pod: "a", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 1},
		{Namespace: "ml", Pod: "b", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 3},
	}
	if got := podRequests(specs, rows); !reflect.DeepEqual(got, want) {
		t.Errorf("podRequests =\n%+v\nwant\n%+v", got, want)
	}
}
