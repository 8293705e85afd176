package simulate

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// FuzzParse feeds arbitrary bytes to the scenario loader. It must never
// panic, and whatever it accepts must keep the promises validate() makes,
// so Start can trust a parsed scenario: a known model, 0-64 GPUs, named and
// unique pods, device entries naming existing GPUs, utilization within
// 0-100, no negative memory. Small accepted nodes are started, and their
// NVML mock and kubelet reply must agree with the scenario.
func FuzzParse(f *testing.F) {
	f.Add(builtin)
	f.Add([]byte("gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"1\", \"0::3\"]\n        utilization: {mean: 50, swing: 50, period: 1m}\n        memoryGiB: 3.5\n"))
	f.Add([]byte("model: H100-SXM5-80GB\ngpus: 1\nallocatable:\n  nvidia.com/gpu.shared: [\"0::0\", \"0::1\"]\n"))
	f.Add([]byte("gpus: 64\n"))
	f.Add([]byte("gpus: 3\ndra:\n  devices: [\"0\", \"1\"]\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        claim: x\n        devices: [\"1\"]\n      - name: d\n        claim: x\n        devices: [\"1\"]\n"))
	f.Add([]byte("model: H100-SXM5-80GB\ngpus: 2\nmig:\n  1: [3g.40gb, 2g.20gb, 1g.10gb]\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/mig-2g.20gb\n        devices: [\"1/1\"]\n        memoryGiB: 30\n"))
	f.Add([]byte("gpus: 2\ngpuState:\n  1:\n    powerWatts: 350.5\n    powerLimitWatts: 400\n    temperature: 88\n    memoryTemperature: 95\n    smClockMHz: 1095\n    smMaxClockMHz: 1410\n    clockEvents: [sw_thermal_slowdown, hw_power_brake_slowdown]\n    ecc: {correctedVolatile: 3, correctedAggregate: 10, uncorrectedVolatile: 1, uncorrectedAggregate: 1}\n    remappedRows: {correctable: 2, uncorrectable: 1, pending: true, failed: false}\n    xid: [{after: 0s, code: 79}, {after: 1m, code: 48}]\n"))
	f.Add([]byte("model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [3g.40gb, 1g.10gb]\ngpuState:\n  0: {xid: [{after: 5s, code: 43, instance: 1}]}\n"))
	f.Add([]byte("gpus: 1\ngpuState:\n  0: {temperature: 151, clockEvents: [nope], ecc: {uncorrectedVolatile: 2}}\n"))
	f.Add([]byte("{}"))
	matcher := resource.MustMatcher(resource.DefaultAll...)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		if s.Node == "" || !slices.Contains(ModelNames(), s.Model) || s.GPUs < 0 || s.GPUs > 64 {
			t.Fatalf("accepted node %q model %q with %d GPUs", s.Node, s.Model, s.GPUs)
		}
		checkDev := func(what, d string) {
			ref, err := ParseDevice(d)
			if err != nil || ref.GPU < 0 || ref.GPU >= s.GPUs || ref.Replica < -1 || ref.MIG >= len(s.MIG[ref.GPU]) || (ref.MIG < 0) == (len(s.MIG[ref.GPU]) > 0) {
				t.Fatalf("%s: accepted device %q (%+v, %v) on a node with %d GPUs", what, d, ref, err, s.GPUs)
			}
		}
		pods := map[string]bool{}
		for _, p := range s.Pods {
			key := p.Namespace + "/" + p.Name
			if p.Namespace == "" || p.Name == "" || pods[key] {
				t.Fatalf("accepted pod %q (empty or duplicate)", key)
			}
			pods[key] = true
			for _, c := range p.Containers {
				if c.Name == "" {
					t.Fatalf("accepted a nameless container in %s", key)
				}
				if _, ok := matcher.Vendor(c.Resource); len(c.Devices) > 0 && !ok && c.Claim == "" {
					t.Fatalf("accepted devices under non-GPU resource %q", c.Resource)
				}
				if c.Claim != "" {
					if s.DRA == nil || c.Resource != "" || len(c.Devices) == 0 {
						t.Fatalf("%s/%s: accepted claim %q without a DRA driver, with a resource, or without devices", key, c.Name, c.Claim)
					}
					for _, d := range c.Devices {
						if !slices.Contains(s.DRA.Devices, d) {
							t.Fatalf("%s/%s: accepted claimed device %q the driver does not publish", key, c.Name, d)
						}
					}
				}
				for _, d := range c.Devices {
					checkDev(key, d)
				}
				u := c.Utilization
				lo, hi := u.Mean-u.Swing, u.Mean+u.Swing
				if !(lo >= 0 && hi <= 100 && u.Swing >= 0) {
					t.Fatalf("%s/%s: accepted utilization %+v outside 0-100", key, c.Name, u)
				}
				if u.Swing > 0 && u.Period <= 0 {
					t.Fatalf("%s/%s: accepted a swing without a period", key, c.Name)
				}
				if !(c.MemoryGiB >= 0) || math.IsInf(c.MemoryGiB, 0) {
					t.Fatalf("%s/%s: accepted memoryGiB %v", key, c.Name, c.MemoryGiB)
				}
			}
		}
		for res, devs := range s.Allocatable {
			if _, ok := matcher.Vendor(res); !ok {
				t.Fatalf("accepted allocatable resource %q", res)
			}
			for _, d := range devs {
				checkDev("allocatable."+res, d)
			}
		}
		for g, st := range s.GPUState {
			if g < 0 || g >= s.GPUs {
				t.Fatalf("accepted gpuState for GPU %d of %d", g, s.GPUs)
			}
			if st.PowerLimitWatts != nil && !(*st.PowerLimitWatts >= 1 && *st.PowerLimitWatts <= 2000) {
				t.Fatalf("accepted power limit %v", *st.PowerLimitWatts)
			}
			for _, x := range st.Xid {
				if x.Code < 1 || x.After < 0 || (x.Instance != nil && *x.Instance >= len(s.MIG[g])) {
					t.Fatalf("accepted Xid %+v on GPU %d", x, g)
				}
			}
		}
		if s.GPUs > 8 {
			return // starting big nodes costs more than it finds
		}
		startAndCheck(t, s)
	})
}

// startAndCheck starts an accepted scenario and checks that the node serves
// what the scenario says.
func startAndCheck(t *testing.T, s *Scenario) {
	at := time.Unix(1_800_000_000, 0)
	n, err := Start(s, func() time.Time { return at })
	if err != nil {
		t.Fatalf("Start on an accepted scenario: %v", err)
	}
	defer n.Close()
	if got, ret := n.NVML.DeviceGetCount(); ret != gonvml.SUCCESS || got != s.GPUs {
		t.Fatalf("NVML reports %d GPUs (%v), scenario has %d", got, ret, s.GPUs)
	}
	for i := 0; i < s.GPUs; i++ {
		if u := n.Utilization(i, at); !(u >= 0 && u <= 100) {
			t.Fatalf("GPU %d utilization %v", i, u)
		}
		dev, _ := n.NVML.DeviceGetHandleByIndex(i)
		if w, ret := dev.GetPowerUsage(); ret != gonvml.SUCCESS || w > 2_000_000 {
			t.Fatalf("GPU %d power %d mW (%v)", i, w, ret)
		}
		mem, ret := dev.GetMemoryInfo_v2()
		if _, mig := s.MIG[i]; mig && !s.MIGMonitor && ret == gonvml.ERROR_NO_PERMISSION {
			continue // withheld without MIG-monitor privilege, as by the driver
		}
		if ret != gonvml.SUCCESS || mem.Used > mem.Total {
			t.Fatalf("GPU %d memory %d of %d (%v)", i, mem.Used, mem.Total, ret)
		}
	}
	if len(s.Pods) == 0 {
		if n.Socket != "" {
			t.Fatalf("a scenario without pods serves a kubelet socket")
		}
		return
	}
	list, err := n.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetPodResources()) != len(s.Pods) {
		t.Fatalf("kubelet lists %d pods, scenario has %d", len(list.GetPodResources()), len(s.Pods))
	}
	uuids := map[string]bool{}
	for i := 0; i < s.GPUs; i++ {
		uuids[UUID(i)] = true
		for j := range s.MIG[i] {
			uuids[MIGUUID(i, j)] = true
			dev, _ := n.NVML.DeviceGetHandleByIndex(i)
			mig, ret := dev.GetMigDeviceHandleByIndex(j)
			if ret != gonvml.SUCCESS {
				t.Fatalf("GPU %d instance %d: %v", i, j, ret)
			}
			if mem, ret := mig.GetMemoryInfo(); ret != gonvml.SUCCESS || mem.Used > mem.Total {
				t.Fatalf("GPU %d instance %d memory %d of %d (%v)", i, j, mem.Used, mem.Total, ret)
			}
		}
	}
	for _, p := range list.GetPodResources() {
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				for _, id := range d.GetDeviceIds() {
					ref, err := podresources.ParseDeviceID(id)
					if err != nil || !uuids[ref.UUID] {
						t.Fatalf("kubelet device ID %q names no simulated GPU (%v)", id, err)
					}
				}
			}
		}
	}
}
