package statuspage

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

var now = time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)

func v(x float64) nvml.Value { return nvml.Value{V: x, OK: true} }

func gpu(i int, uuid string) nvml.Reading {
	return nvml.Reading{
		DeviceInfo: nvml.DeviceInfo{UUID: uuid, Name: "NVIDIA H100 80GB HBM3", Index: i, Minor: i, MemoryTotal: 80 << 30, GPUInstance: -1, ComputeInstance: -1},
		DutyCycle:  50, HasDutyCycle: true, MemoryUsed: 20 << 30, HasMemory: true,
		Telemetry: nvml.Telemetry{PowerWatts: v(350), PowerLimitWatts: v(700), TempGPU: v(60)},
	}
}

func mig(parent nvml.Reading, uuid, profile string, gi int) nvml.Reading {
	return nvml.Reading{
		DeviceInfo: nvml.DeviceInfo{UUID: uuid, Name: parent.Name + " MIG " + profile, Index: parent.Index, Minor: parent.Minor,
			ParentUUID: parent.UUID, Profile: profile, GPUInstance: gi, ComputeInstance: 0, MemoryTotal: 10 << 30},
		MemoryUsed: 1 << 30, HasMemory: true,
	}
}

// view builds a View whose pointers point into its own Devices, as Join's do.
func view(devs []nvml.Reading, holders map[string][][3]string, health map[string][2]string) collector.View {
	vw := collector.View{Devices: devs}
	for i := range vw.Devices {
		d := &vw.Devices[i]
		for _, h := range holders[d.UUID] {
			vw.Usage = append(vw.Usage, collector.Usage{Namespace: h[0], Pod: h[1], Container: h[2], Device: d})
		}
		if h, ok := health[d.UUID]; ok {
			vw.Health = append(vw.Health, collector.DeviceHealth{Device: d, Status: h[0], Reason: h[1]})
		}
	}
	return vw
}

func TestBuildRows(t *testing.T) {
	g0, g1 := gpu(0, "GPU-0"), gpu(1, "GPU-1")
	g1.MIGEnabled, g1.HasDutyCycle = true, false
	bare := gpu(2, "GPU-2")
	bare.HasDutyCycle, bare.HasMemory, bare.Telemetry = false, false, nvml.Telemetry{}
	xid := gpu(3, "GPU-3")
	xid.Xid, xid.LastXid = map[uint64]uint64{79: 1, 13: 2}, now.Add(-time.Minute)
	prof := gpu(4, "GPU-4")
	prof.Profiling = make([]nvml.Value, nvml.ProfSMOccupancy+1)
	prof.Profiling[nvml.ProfSMActive] = v(0.25)

	tests := []struct {
		name    string
		v       collector.View
		want    []Row
		noneWhy string
	}{{
		name: "one holder, healthy",
		v:    view([]nvml.Reading{g0}, map[string][][3]string{"GPU-0": {{"ml", "train-0", "main"}}}, map[string][2]string{"GPU-0": {"healthy", "none"}}),
		want: []Row{{ID: "0", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-0", Holders: []string{"ml/train-0/main"},
			Duty: "50 %", DutyPct: 50, SM: none, Memory: "20.0 / 80.0 GiB", MemPct: 25, Power: "350 / 700 W", Temp: "60 °C",
			Health: "healthy", Class: "healthy"}},
	}, {
		name: "shared GPU lists every holder",
		v:    view([]nvml.Reading{g0}, map[string][][3]string{"GPU-0": {{"b", "a", "w"}, {"b", "b", "w"}}}, nil),
		want: []Row{{ID: "0", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-0", Holders: []string{"b/a/w", "b/b/w"},
			Duty: "50 %", DutyPct: 50, SM: none, Memory: "20.0 / 80.0 GiB", MemPct: 25, Power: "350 / 700 W", Temp: "60 °C",
			Health: none, Class: "unknown"}},
	}, {
		name: "MIG instances under their GPU, ordered by instance, with its health",
		v: view([]nvml.Reading{mig(g1, "MIG-b", "2g.20gb", 3), g1, mig(g1, "MIG-a", "1g.10gb", 1)},
			map[string][][3]string{"MIG-b": {{"nb", "alice", "nb"}}}, map[string][2]string{"GPU-1": {"degraded", "thermal_slowdown"}}),
		want: []Row{
			{ID: "1", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-1", Duty: none, DutyPct: -1, SM: none, Memory: "20.0 / 80.0 GiB", MemPct: 25,
				Power: "350 / 700 W", Temp: "60 °C", Health: "degraded", Reason: "thermal_slowdown", Class: "degraded"},
			{MIG: true, ID: "1 / GI 1 CI 0", Model: "MIG 1g.10gb", UUID: "MIG-a", Duty: none, DutyPct: -1, SM: none, Memory: "1.0 / 10.0 GiB", MemPct: 10,
				Power: none, Temp: none, Health: "degraded", Reason: "thermal_slowdown", Class: "degraded"},
			{MIG: true, ID: "1 / GI 3 CI 0", Model: "MIG 2g.20gb", UUID: "MIG-b", Holders: []string{"nb/alice/nb"}, Duty: none, DutyPct: -1, SM: none,
				Memory: "1.0 / 10.0 GiB", MemPct: 10, Power: none, Temp: none, Health: "degraded", Reason: "thermal_slowdown", Class: "degraded"},
		},
	}, {
		name: "unsupported readings are dashes, not zeros",
		v:    view([]nvml.Reading{bare}, nil, nil),
		want: []Row{{ID: "2", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-2", Duty: none, DutyPct: -1, SM: none, Memory: "— / 80.0 GiB", MemPct: -1,
			Power: none, Temp: none, Health: none, Class: "unknown"}},
	}, {
		name: "Xid codes with counts and the time of the last",
		v:    view([]nvml.Reading{xid}, nil, map[string][2]string{"GPU-3": {"failed", "xid"}}),
		want: []Row{{ID: "3", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-3", Duty: "50 %", DutyPct: 50, SM: none, Memory: "20.0 / 80.0 GiB", MemPct: 25,
			Power: "350 / 700 W", Temp: "60 °C", Health: "failed", Reason: "xid", Class: "failed", Xid: "13 ×2, 79 ×1; last 2026-12-02 12:59:00 UTC"}},
	}, {
		name: "SM activity from GPM",
		v:    view([]nvml.Reading{prof}, nil, nil),
		want: []Row{{ID: "4", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-4", Duty: "50 %", DutyPct: 50, SM: "25 %", Memory: "20.0 / 80.0 GiB", MemPct: 25,
			Power: "350 / 700 W", Temp: "60 °C", Health: none, Class: "unknown"}},
	}, {
		name: "a lost GPU stays listed, by its health row",
		v: func() collector.View {
			vw := view([]nvml.Reading{g0}, nil, map[string][2]string{"GPU-0": {"healthy", "none"}})
			lost := &nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-9", Name: "NVIDIA H100 80GB HBM3", Index: 1, MemoryTotal: 80 << 30}}
			vw.Health = append(vw.Health, collector.DeviceHealth{Device: lost, Status: "failed", Reason: "lost"})
			return vw
		}(),
		want: []Row{
			{ID: "0", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-0", Duty: "50 %", DutyPct: 50, SM: none, Memory: "20.0 / 80.0 GiB", MemPct: 25,
				Power: "350 / 700 W", Temp: "60 °C", Health: "healthy", Class: "healthy"},
			{ID: "1", Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-9", Duty: none, DutyPct: -1, SM: none, Memory: "— / 80.0 GiB", MemPct: -1,
				Power: none, Temp: none, Health: "failed", Reason: "lost", Class: "failed"},
		},
	}, {
		name:    "NVML down: no rows, and why",
		v:       collector.View{},
		noneWhy: "NVML is down: no GPU readings.",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Build(tt.v, []collector.SourceState{{Name: "nvml", Up: tt.noneWhy == ""}}, Info{Now: now})
			if !reflect.DeepEqual(p.GPUs, tt.want) {
				t.Errorf("rows:\n got %+v\nwant %+v", p.GPUs, tt.want)
			}
			if p.NoDevices != tt.noneWhy {
				t.Errorf("NoDevices = %q, want %q", p.NoDevices, tt.noneWhy)
			}
		})
	}
}

func TestBuildUnattributedHolders(t *testing.T) {
	vw := view([]nvml.Reading{gpu(0, "GPU-0")}, nil, nil)
	d := &vw.Devices[0]
	vw.Unattributed = []collector.Unattributed{{Device: d, Namespace: "rogue", Pod: "all-gpus"}, {Device: d}}
	got := Build(vw, nil, Info{Now: now}).GPUs[0].Holders
	want := []string{"rogue/all-gpus (not requested)", "host process (no pod)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("holders = %q, want %q", got, want)
	}
}

func TestBuildResourcesAndSources(t *testing.T) {
	vw := collector.View{
		Node: []collector.NodeResource{{Resource: "nvidia.com/gpu", Allocatable: 8, HasAllocatable: true}, {Resource: "nvidia.com/mig-1g.10gb"}},
		PodRequests: []collector.PodResource{
			{Namespace: "a", Pod: "p", Resource: "nvidia.com/gpu", Request: 4},
			{Namespace: "b", Pod: "q", Resource: "nvidia.com/gpu", Request: 1},
		},
	}
	sources := []collector.SourceState{
		{Name: "nvml", Up: true},
		{Name: "kubelet", Err: errors.New("rpc error: code = Unavailable").Error(), Errors: map[string]uint64{"unavailable": 3, "deadline": 1, "watch": 0}},
		{Name: "kubernetes", Up: true, LastErr: "watch pods: 410 Gone", LastErrAt: now.Add(-time.Hour)},
	}
	p := Build(vw, sources, Info{Now: now})
	wantRes := []Resource{{Name: "nvidia.com/gpu", Requested: "5", Allocatable: "8"}, {Name: "nvidia.com/mig-1g.10gb", Requested: "0", Allocatable: none}}
	if !reflect.DeepEqual(p.Resources, wantRes) {
		t.Errorf("resources = %+v, want %+v", p.Resources, wantRes)
	}
	wantSrc := []SourceLine{
		{Name: "nvml", State: "up", Class: "ok"},
		{Name: "kubelet", State: "down", Class: "bad", LastErr: "rpc error: code = Unavailable", Errors: "deadline 1, unavailable 3"},
		{Name: "kubernetes", State: "up", Class: "ok", LastErr: "watch pods: 410 Gone (2026-12-02 12:00:00 UTC)"},
	}
	if !reflect.DeepEqual(p.Sources, wantSrc) {
		t.Errorf("sources = %+v, want %+v", p.Sources, wantSrc)
	}
	if p.NoDevices != "No GPU found." {
		t.Errorf("NoDevices = %q", p.NoDevices)
	}
}
