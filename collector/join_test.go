package collector

import (
	"reflect"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

const (
	uuid0 = "GPU-00000000-0000-4000-8000-000000000000"
	uuid1 = "GPU-00000000-0000-4000-8000-000000000001"
	uuid2 = "GPU-00000000-0000-4000-8000-000000000002"
	mig0  = "MIG-00000000-0000-4000-8000-0000000000a0"
)

func gpu(i int, uuid string) nvml.Reading {
	return nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: uuid, Name: "NVIDIA A100-SXM4-40GB", Index: i, Minor: i, GPUInstance: -1, ComputeInstance: -1, MemoryTotal: 40 << 30}, DutyCycle: float64(10 * (i + 1)), HasDutyCycle: true, MemoryUsed: 1 << 30, HasMemory: true}
}

func usageKeys(v View) []string {
	var out []string
	for _, u := range v.Usage {
		out = append(out, u.Namespace+"/"+u.Pod+"/"+u.Container+"@"+u.Device.UUID)
	}
	return out
}

func TestJoinUsage(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	devs := []nvml.Reading{gpu(0, uuid0), gpu(1, uuid1), gpu(2, uuid2)}
	migParent := gpu(2, uuid2)
	migParent.MIGEnabled = true
	migDev := nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: mig0, ParentUUID: uuid2, Index: 2, Minor: 2, GPUInstance: 7, ComputeInstance: 0, Profile: "1g.5gb", MemoryTotal: 5 << 30}, HasMemory: true}
	tests := []struct {
		name      string
		devs      []nvml.Reading
		ctrs      []podresources.ContainerDevices
		want      []string
		unmatched []string
	}{
		{
			name: "exclusive GPU by UUID",
			devs: devs,
			ctrs: []podresources.ContainerDevices{{Namespace: "ml", Pod: "train", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuid0, uuid1}}},
			want: []string{"ml/train/main@" + uuid0, "ml/train/main@" + uuid1},
		},
		{
			name: "time-sliced replicas map to the same physical GPU",
			devs: devs,
			ctrs: []podresources.ContainerDevices{
				{Namespace: "b", Pod: "shared-a", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::0"}},
				{Namespace: "b", Pod: "shared-b", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::1"}},
			},
			want: []string{"b/shared-a/w@" + uuid1, "b/shared-b/w@" + uuid1},
		},
		{
			name: "two replicas of one GPU in one container give one series",
			devs: devs,
			ctrs: []podresources.ContainerDevices{{Namespace: "b", Pod: "p", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::0", uuid1 + "::3"}}},
			want: []string{"b/p/w@" + uuid1},
		},
		{
			name: "GKE minors and vgpu replicas",
			devs: devs,
			ctrs: []podresources.ContainerDevices{{Namespace: "g", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{"nvidia0", "nvidia1/vgpu3"}}},
			want: []string{"g/p/c@" + uuid0, "g/p/c@" + uuid1},
		},
		{
			name: "MIG by UUID, legacy ID and GKE gi",
			devs: []nvml.Reading{gpu(0, uuid0), migParent, migDev},
			ctrs: []podresources.ContainerDevices{
				{Namespace: "m", Pod: "a", Container: "c", Resource: "nvidia.com/mig-1g.5gb", DeviceIDs: []string{mig0}},
				{Namespace: "m", Pod: "b", Container: "c", Resource: "nvidia.com/mig-1g.5gb", DeviceIDs: []string{"MIG-" + uuid2 + "/7/0"}},
				{Namespace: "m", Pod: "c", Container: "c", Resource: "nvidia.com/mig-1g.5gb", DeviceIDs: []string{"nvidia2/gi7"}},
			},
			want: []string{"m/a/c@" + mig0, "m/b/c@" + mig0, "m/c/c@" + mig0},
		},
		{
			name:      "unknown and malformed IDs are unmatched, the rest served",
			devs:      devs,
			ctrs:      []podresources.ContainerDevices{{Namespace: "x", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{"GPU-ffffffff-0000-4000-8000-000000000000", "garbage", uuid2}}},
			want:      []string{"x/p/c@" + uuid2},
			unmatched: []string{"GPU-ffffffff-0000-4000-8000-000000000000", "garbage"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Join(Inputs{Devices: tt.devs, NVMLUp: true, Kubelet: &podresources.Snapshot{Containers: tt.ctrs}, Matcher: m})
			if got := usageKeys(v); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("usage = %v\nwant    %v", got, tt.want)
			}
			if !reflect.DeepEqual(v.Unmatched, tt.unmatched) {
				t.Errorf("unmatched = %v, want %v", v.Unmatched, tt.unmatched)
			}
		})
	}
}

func TestJoinNodeResources(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	devs := []nvml.Reading{gpu(0, uuid0), gpu(1, uuid1), gpu(2, uuid2)}
	res := func(name string, c float64, hc bool, a float64, ha bool) NodeResource {
		return NodeResource{Resource: name, Vendor: "nvidia", Capacity: c, HasCapacity: hc, Allocatable: a, HasAllocatable: ha}
	}
	tests := []struct {
		name    string
		nvmlUp  bool
		kubelet *podresources.Snapshot
		specs   *Specs
		want    []NodeResource
	}{
		{"NVML only", true, nil, nil, []NodeResource{res("nvidia.com/gpu", 3, true, 0, false)}},
		{"nothing known", false, nil, nil, []NodeResource{}},
		{"kubelet only", false, &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": {uuid0, uuid1}}}, nil,
			[]NodeResource{res("nvidia.com/gpu", 0, false, 2, true)}},
		{"unhealthy GPU dropped from allocatable", true, &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": {uuid0, uuid1}}}, nil,
			[]NodeResource{res("nvidia.com/gpu", 3, true, 2, true)}},
		{"time-sliced GPU counted once, under its shared resource", true, &podresources.Snapshot{Allocatable: map[string][]string{
			"nvidia.com/gpu":        {uuid0, uuid1},
			"nvidia.com/gpu.shared": {uuid2 + "::0", uuid2 + "::1", uuid2 + "::2", uuid2 + "::3"},
		}}, nil, []NodeResource{res("nvidia.com/gpu", 2, true, 2, true), res("nvidia.com/gpu.shared", 4, true, 4, true)}},
		{"allocatable IDs naming no device of this node are not counted", true, &podresources.Snapshot{Allocatable: map[string][]string{
			"nvidia.com/gpu": {uuid0, "GPU-5151b5ae-7e33-b4f6-f5c3-000000000009"},
		}}, nil, []NodeResource{res("nvidia.com/gpu", 3, true, 1, true)}},
		{"API specs win", true, &podresources.Snapshot{Allocatable: map[string][]string{"nvidia.com/gpu": {uuid0}}},
			&Specs{NodeFound: true, Node: []NodeResource{res("nvidia.com/gpu", 8, true, 7, true)}},
			[]NodeResource{res("nvidia.com/gpu", 8, true, 7, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Inputs{NVMLUp: tt.nvmlUp, Kubelet: tt.kubelet, Specs: tt.specs, Matcher: m}
			if tt.nvmlUp {
				in.Devices = devs
			}
			if got := Join(in).Node; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("node = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestJoinRequestsFromKubelet(t *testing.T) {
	m := resource.MustMatcher(resource.DefaultAll...)
	k := &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "a", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuid0, uuid1}},
		{Namespace: "a", Pod: "q", Container: "c", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid2 + "::1"}},
	}}
	got := Join(Inputs{Kubelet: k, Matcher: m}).Requests
	want := []ContainerResource{
		{Namespace: "a", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", Vendor: "nvidia", Request: 2, Limit: 2},
		{Namespace: "a", Pod: "q", Container: "c", Resource: "nvidia.com/gpu.shared", Vendor: "nvidia", Request: 1, Limit: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("requests = %+v\nwant %+v", got, want)
	}
}
