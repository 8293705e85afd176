package collector

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// fakeLookup maps container IDs "c-<ns>-<pod>-<ctr>" and pod UIDs "u-<ns>-<pod>".
type fakeLookup map[string][3]string

func (f fakeLookup) PodByUID(uid string) (kube.PodRef, bool) {
	for k, v := range f {
		if k == "u-"+v[0]+"-"+v[1] && uid == k {
			return kube.PodRef{Namespace: v[0], Name: v[1], UID: uid}, true
		}
	}
	return kube.PodRef{}, false
}

func (f fakeLookup) ContainerByID(id string) (kube.ContainerRef, bool) {
	v, ok := f[id]
	if !ok || id != fmt.Sprintf("c-%s-%s-%s", v[0], v[1], v[2]) {
		return kube.ContainerRef{}, false
	}
	return kube.ContainerRef{Namespace: v[0], Pod: v[1], Container: v[2]}, true
}

func lookupOf(ctrs ...[3]string) fakeLookup {
	f := fakeLookup{}
	for _, c := range ctrs {
		f[fmt.Sprintf("c-%s-%s-%s", c[0], c[1], c[2])] = c
		f[fmt.Sprintf("u-%s-%s", c[0], c[1])] = c
	}
	return f
}

func owner(ns, pod, ctr string) OwnerResult {
	return OwnerResult{Owner: cgroup.Owner{PodUID: "u-" + ns + "-" + pod, ContainerID: fmt.Sprintf("c-%s-%s-%s", ns, pod, ctr)}}
}

type usageNums struct {
	Key  string
	Duty float64
	Mem  uint64
}

func nums(v View) []usageNums {
	var out []usageNums
	for _, u := range v.Usage {
		out = append(out, usageNums{u.Pod, u.DutyCycle, u.MemoryUsed})
	}
	return out
}

func TestAttribution(t *testing.T) {
	shared := gpu(1, uuid1)
	shared.DutyCycle, shared.MemoryUsed = 80, 8<<30
	shared.ProcessesOK = true
	shared.Processes = []nvml.Process{
		{PID: 10, SMUtil: 70, HasUtil: true, MemoryUsed: 6 << 30, HasMemory: true},
		{PID: 20, SMUtil: 10, HasUtil: true, MemoryUsed: 2 << 30, HasMemory: true},
	}
	kubelet := &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "b", Pod: "a", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::0"}},
		{Namespace: "b", Pod: "b", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::1"}},
		{Namespace: "b", Pod: "c", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::2"}},
	}}
	look := lookupOf([3]string{"b", "a", "w"}, [3]string{"b", "b", "w"}, [3]string{"b", "c", "w"}, [3]string{"x", "rogue", "main"})
	specs := &Specs{Lookup: look}
	m := resource.MustMatcher(resource.DefaultAll...)

	tests := []struct {
		name     string
		dev      func(nvml.Reading) nvml.Reading
		owners   map[uint32]OwnerResult
		specs    *Specs
		noAttr   string
		mode     string
		reason   string
		want     []usageNums
		unattrib []Unattributed
	}{
		{
			name:   "per-process split: 70/10, not 80/80; idle holder 0",
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: owner("b", "b", "w")},
			specs:  specs, mode: "per_process",
			want: []usageNums{{"a", 70, 6 << 30}, {"b", 10, 2 << 30}, {"c", 0, 0}},
		},
		{
			name:   "pod UID alone places a process when the container ID is unknown",
			owners: map[uint32]OwnerResult{10: {Owner: cgroup.Owner{PodUID: "u-b-a"}}, 20: owner("b", "b", "w")},
			specs:  specs, mode: "per_process",
			want: []usageNums{{"a", 70, 6 << 30}, {"b", 10, 2 << 30}, {"c", 0, 0}},
		},
		{
			name:   "a process of a pod holding nothing is unattributed use",
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: owner("x", "rogue", "main")},
			specs:  specs, mode: "per_process",
			want:     []usageNums{{"a", 70, 6 << 30}, {"b", 0, 0}, {"c", 0, 0}},
			unattrib: []Unattributed{{Namespace: "x", Pod: "rogue", DutyCycle: 10, HasDutyCycle: true, MemoryUsed: 2 << 30}},
		},
		{
			name:   "a host process is unattributed without a pod",
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: {Err: cgroup.ErrNotInPod}},
			specs:  specs, mode: "per_process",
			want:     []usageNums{{"a", 70, 6 << 30}, {"b", 0, 0}, {"c", 0, 0}},
			unattrib: []Unattributed{{DutyCycle: 10, HasDutyCycle: true, MemoryUsed: 2 << 30}},
		},
		{
			name:   "unreadable PID: device-wide, not a guess",
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: {Err: errors.New("no such file")}},
			specs:  specs, mode: "device", reason: "pid_unresolved",
			want: []usageNums{{"a", 80, 8 << 30}, {"b", 80, 8 << 30}, {"c", 80, 8 << 30}},
		},
		{
			name: "NVML without per-process data",
			dev: func(r nvml.Reading) nvml.Reading {
				r.ProcessesOK, r.Processes, r.ProcessesReason = false, nil, "not_supported"
				return r
			},
			owners: map[uint32]OwnerResult{},
			specs:  specs, mode: "device", reason: "not_supported",
			want: []usageNums{{"a", 80, 8 << 30}, {"b", 80, 8 << 30}, {"c", 80, 8 << 30}},
		},
		{
			// A time-sliced MIG instance: NVML lists its processes and
			// their memory, not their utilization.
			name: "processes without utilization: memory split, duty cycle the device's",
			dev: func(r nvml.Reading) nvml.Reading {
				r.UtilReason = "not_supported"
				r.Processes = []nvml.Process{{PID: 10, MemoryUsed: 6 << 30, HasMemory: true}, {PID: 20, MemoryUsed: 2 << 30, HasMemory: true}}
				return r
			},
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: owner("x", "rogue", "main")},
			specs:  specs, mode: "per_process_memory", reason: "not_supported",
			want:     []usageNums{{"a", 80, 6 << 30}, {"b", 80, 0}, {"c", 80, 0}},
			unattrib: []Unattributed{{Namespace: "x", Pod: "rogue", MemoryUsed: 2 << 30}},
		},
		{
			name: "processes without utilization, one unreadable: device-wide",
			dev: func(r nvml.Reading) nvml.Reading {
				r.UtilReason = "not_supported"
				r.Processes = []nvml.Process{{PID: 10, MemoryUsed: 6 << 30, HasMemory: true}, {PID: 20, MemoryUsed: 2 << 30, HasMemory: true}}
				return r
			},
			owners: map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: {Err: errors.New("no such file")}},
			specs:  specs, mode: "device", reason: "pid_unresolved",
			want: []usageNums{{"a", 80, 8 << 30}, {"b", 80, 8 << 30}, {"c", 80, 8 << 30}},
		},
		{
			name: "no Kubernetes API",
			mode: "device", reason: "no_kubernetes_api",
			want: []usageNums{{"a", 80, 8 << 30}, {"b", 80, 8 << 30}, {"c", 80, 8 << 30}},
		},
		{
			name:  "no procfs",
			specs: specs, noAttr: "no_procfs",
			mode: "device", reason: "no_procfs",
			want: []usageNums{{"a", 80, 8 << 30}, {"b", 80, 8 << 30}, {"c", 80, 8 << 30}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := shared
			if tt.dev != nil {
				d = tt.dev(d)
			}
			v := Join(Inputs{Devices: []nvml.Reading{d}, NVMLUp: true, Kubelet: kubelet, Specs: tt.specs, Matcher: m, Owners: tt.owners, NoAttribution: tt.noAttr})
			if got := nums(v); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("usage = %v, want %v", got, tt.want)
			}
			if len(v.Attribution) != 1 || v.Attribution[0].Mode != tt.mode || v.Attribution[0].Reason != tt.reason {
				t.Errorf("attribution = %+v, want %s/%s", v.Attribution, tt.mode, tt.reason)
			}
			for i := range v.Unattributed {
				v.Unattributed[i].Device = nil
			}
			if !reflect.DeepEqual(v.Unattributed, tt.unattrib) && (len(v.Unattributed) != 0 || len(tt.unattrib) != 0) {
				t.Errorf("unattributed = %+v, want %+v", v.Unattributed, tt.unattrib)
			}
		})
	}
}

func TestAttributionExclusiveAndUnallocated(t *testing.T) {
	excl := gpu(0, uuid0)
	excl.ProcessesOK = true
	excl.Processes = []nvml.Process{{PID: 1, SMUtil: 10, MemoryUsed: 1 << 30}, {PID: 2, SMUtil: 5, MemoryUsed: 1 << 20}}
	free := gpu(2, uuid2)
	free.ProcessesOK = true
	free.Processes = []nvml.Process{{PID: 3, SMUtil: 25, MemoryUsed: 3 << 30}}
	kubelet := &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "ml", Pod: "t", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuid0}},
	}}
	look := lookupOf([3]string{"ml", "t", "c"}, [3]string{"x", "rogue", "main"})
	owners := map[uint32]OwnerResult{1: owner("ml", "t", "c"), 2: owner("x", "rogue", "main"), 3: owner("x", "rogue", "main")}
	v := Join(Inputs{Devices: []nvml.Reading{excl, free}, NVMLUp: true, Kubelet: kubelet, Specs: &Specs{Lookup: look}, Matcher: resource.MustMatcher(resource.DefaultAll...), Owners: owners})
	// The exclusive holder keeps device-wide numbers.
	if got := nums(v); !reflect.DeepEqual(got, []usageNums{{"t", excl.DutyCycle, excl.MemoryUsed}}) {
		t.Fatalf("usage = %v", got)
	}
	if v.Attribution[0].Mode != "exclusive" {
		t.Fatalf("attribution = %+v", v.Attribution)
	}
	if len(v.Unattributed) != 2 || v.Unattributed[0].Device.UUID != uuid0 || v.Unattributed[0].MemoryUsed != 1<<20 ||
		v.Unattributed[1].Device.UUID != uuid2 || v.Unattributed[1].DutyCycle != 25 || v.Unattributed[1].Pod != "rogue" {
		t.Fatalf("unattributed = %+v", v.Unattributed)
	}
}
