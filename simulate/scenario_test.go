package simulate

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func TestBuiltinScenario(t *testing.T) {
	s := Builtin()
	if s.GPUs != 8 || len(s.Pods) < 5 || s.Node != "sim-node" {
		t.Fatalf("built-in scenario = %+v", s)
	}
}

func TestParseErrorsNameLineOrField(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"gpus: 2\npods:\n  - namespace: a\n    nmae: b\n", "line 4"},
		{"gpus: two\n", "line 1"},
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"5\"]\n", "pods[0].containers[0].devices[0]: GPU 5 does not exist"},
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: cpu\n        devices: [\"0\"]\n", "pods[0].containers[0].resource"},
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n        utilization: {mean: 90, swing: 20, period: 1m}\n", "pods[0].containers[0].utilization"},
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n        utilization: {mean: 50, swing: 1, period: soon}\n", "invalid duration"},
		{"model: Z80\n", "model: unknown model"},
		{"gpus: 1\npods:\n  - namespace: a\n    name: b\n    controller: {kind: StatefulSet, name: b}\n", "pods[0].controller: apiVersion, kind and name are required"},
		{"gpus: 1\nallocatable:\n  nvidia.com/gpu: [\"x\"]\n", "allocatable.nvidia.com/gpu[0]"},
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n      - name: c\n        resource: nvidia.com/gpu\n        devices: [\"1\"]\n", "pods[0].containers[1].name: duplicate container c in pod a/b"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tt.yaml, err, tt.want)
		}
	}
}

func TestSamplerReadsSimulatedUtilization(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	now := func() time.Time { return at }
	n, err := Start(Builtin(), now)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s := nvml.NewSampler(n.NVML, nvml.Config{Window: 10 * time.Second, Now: now})
	s.Poll()
	snap := s.Snapshot()
	if !snap.Up || len(snap.Devices) != 8 {
		t.Fatalf("snapshot = %+v", snap)
	}
	for i, d := range snap.Devices {
		if d.UUID != UUID(i) {
			t.Fatalf("device %d UUID = %s", i, d.UUID)
		}
		// Mean of the 10 one-second samples in the window, each rounded as the driver does.
		var sum float64
		for k := 0; k < 10; k++ {
			sum += math.Round(n.Utilization(i, at.Add(-time.Duration(k)*time.Second)))
		}
		if want := sum / 10; math.Abs(d.DutyCycle-want) > 1e-9 {
			t.Errorf("GPU %d duty = %v, want %v", i, d.DutyCycle, want)
		}
		if d.MemoryUsed != n.MemoryUsed(i) {
			t.Errorf("GPU %d memory = %d, want %d", i, d.MemoryUsed, n.MemoryUsed(i))
		}
	}
	// GPU 7 is allocated to nobody but used by research/analysis-0.
	if snap.Devices[7].DutyCycle < 10 || snap.Devices[7].MemoryUsed != 3<<30 {
		t.Errorf("GPU 7 should carry the unrequested use: %+v", snap.Devices[7])
	}
	if snap.Devices[0].DutyCycle < 85 || snap.Devices[5].DutyCycle > 2 {
		t.Errorf("trainer %v / notebook %v out of their ranges", snap.Devices[0].DutyCycle, snap.Devices[5].DutyCycle)
	}
}

func TestSimulatedKubeletOverRealSocket(t *testing.T) {
	_, snap := fetchSimulated(t, Builtin())
	var shared []string
	for _, ct := range snap.Containers {
		if ct.Resource == "nvidia.com/gpu.shared" {
			shared = append(shared, ct.DeviceIDs...)
		}
	}
	if len(shared) != 2 || shared[0] != UUID(6)+"::0" || shared[1] != UUID(6)+"::1" {
		t.Fatalf("shared device IDs = %v", shared)
	}
	if got := len(snap.Allocatable["nvidia.com/gpu"]); got != 7 {
		t.Fatalf("allocatable nvidia.com/gpu = %d, want 7", got)
	}
}

// TestSimulatedProcessesAddUpToDevice checks the per-process data the
// simulated driver gives: the two time-sliced pods' SM utilization and
// memory add up to the device's, and every process has a cgroup naming its
// pod and container.
func TestSimulatedProcessesAddUpToDevice(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	now := func() time.Time { return at }
	n, err := Start(Builtin(), now)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s := nvml.NewSampler(n.NVML, nvml.Config{Window: 10 * time.Second, Now: now, Processes: true})
	s.Poll()
	d := s.Snapshot().Devices[6]
	if !d.ProcessesOK || len(d.Processes) != 2 {
		t.Fatalf("GPU 6 processes = %+v (%v %s)", d.Processes, d.ProcessesOK, d.ProcessesReason)
	}
	var util float64
	var mem uint64
	for _, p := range d.Processes {
		util += p.SMUtil
		mem += p.MemoryUsed
	}
	if math.Abs(util-d.DutyCycle) > 1 || mem != d.MemoryUsed {
		t.Fatalf("processes sum to %.2f%% / %d bytes, device %.2f%% / %d", util, mem, d.DutyCycle, d.MemoryUsed)
	}
	r := cgroup.Reader{Root: n.ProcRoot}
	if err := r.Available(); err != nil {
		t.Fatal(err)
	}
	o, err := r.Owner(d.Processes[0].PID)
	if err != nil || o.PodUID != PodUID("batch", "shared-a") || o.ContainerID != ContainerID("batch", "shared-a", "worker") {
		t.Fatalf("owner of %d = %+v, %v", d.Processes[0].PID, o, err)
	}
}

func TestMIGScenario(t *testing.T) {
	s, err := Load("../examples/mig-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_800_000_000, 0)
	clock := at
	now := func() time.Time { return clock }
	n, err := Start(s, now)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	smp := nvml.NewSampler(n.NVML, nvml.Config{Window: time.Minute, Now: now})
	for k := 0; k < 4; k++ {
		smp.Poll()
		clock = clock.Add(5 * time.Second)
	}
	clock = clock.Add(-5 * time.Second)
	byID := map[string]nvml.Reading{}
	for _, d := range smp.Snapshot().Devices {
		byID[d.UUID] = d
	}
	if len(byID) != 4+6 {
		t.Fatalf("%d devices, want 4 GPUs and 6 MIG instances", len(byID))
	}
	parent := byID[UUID(0)]
	if !parent.MIGEnabled || parent.HasDutyCycle {
		t.Errorf("GPU 0 = %+v; want MIG-enabled without a duty cycle", parent)
	}
	var used uint64
	for j := 0; j < 6; j++ {
		d, ok := byID[MIGUUID(0, j)]
		if !ok {
			t.Fatalf("instance 0/%d missing", j)
		}
		profile, total := "1g.10gb", uint64(10<<30)
		if j == 5 {
			profile, total = "2g.20gb", 20<<30
		}
		if d.ParentUUID != UUID(0) || d.Profile != profile || d.GPUInstance != MIGInstanceID(j) || d.ComputeInstance != 0 || d.MemoryTotal != total {
			t.Errorf("instance 0/%d = %+v", j, d.DeviceInfo)
		}
		if d.MemoryUsed != n.InstanceMemoryUsed(0, j) {
			t.Errorf("instance 0/%d memory = %d, want %d", j, d.MemoryUsed, n.InstanceMemoryUsed(0, j))
		}
		used += d.MemoryUsed
		// GPM: the mean of the per-poll busy shares, each the mean of the
		// simulated driver's one-second samples between two polls.
		var sum float64
		for k := 1; k < 4; k++ {
			from := at.Add(time.Duration(k-1) * 5 * time.Second)
			sum += n.meanUtilization(devKey{0, j}, from, from.Add(5*time.Second))
		}
		if want := sum / 3; !d.HasDutyCycle || math.Abs(d.DutyCycle-want) > 1e-9 {
			t.Errorf("instance 0/%d duty = %v (%v), want %v", j, d.DutyCycle, d.HasDutyCycle, want)
		}
	}
	if parent.MemoryUsed != used {
		t.Errorf("GPU 0 memory used %d, want its instances' sum %d", parent.MemoryUsed, used)
	}
	if d := byID[MIGUUID(0, 3)]; d.DutyCycle < 55 || d.DutyCycle > 85 {
		t.Errorf("embedder-0's instance duty = %v, want within 60-80", d.DutyCycle)
	}
	alloc, _ := n.Allocatable(context.Background())
	got := map[string]int{}
	for _, d := range alloc.GetDevices() {
		got[d.GetResourceName()] = len(d.GetDeviceIds())
	}
	if got["nvidia.com/gpu"] != 3 || got["nvidia.com/mig-1g.10gb"] != 5 || got["nvidia.com/mig-2g.20gb"] != 2 {
		t.Errorf("allocatable = %v, want 3 whole GPUs, 5 instances and 2 replicas of one", got)
	}
}

func TestMIGScenarioErrors(t *testing.T) {
	pod := func(res, dev string) string {
		return "pods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        resource: " + res + "\n        devices: [\"" + dev + "\"]\n"
	}
	tests := []struct{ yaml, want string }{
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.11gb]\n", `mig.0[0]: H100-SXM5-80GB has no MIG profile "1g.11gb"`},
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [4g.40gb, 4g.40gb]\n", "mig.0: instances take 8 slices"},
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  1: [1g.10gb]\n", "mig.1: GPU 1 does not exist"},
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.10gb]\n" + pod("nvidia.com/gpu", "0"), `GPU 0 is MIG-enabled: name one of its instances, such as "0/0"`},
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.10gb]\n" + pod("nvidia.com/mig-1g.10gb", "0/1"), "GPU 0 has 1 MIG instances"},
		{"model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [1g.10gb]\n" + pod("nvidia.com/mig-2g.20gb", "0/0"), "instance 0/0 is a 1g.10gb, not a nvidia.com/mig-2g.20gb"},
		{"model: H100-SXM5-80GB\ngpus: 2\nmig:\n  0: [1g.10gb]\n" + pod("nvidia.com/mig-1g.10gb", "1/0"), "GPU 1 has no MIG instances"},
		{"gpus: 1\n" + pod("nvidia.com/gpu", "0/x"), `a MIG instance is "<gpu>/<instance>"`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tt.yaml, err, tt.want)
		}
	}
	// Single strategy: MIG instances handed out as nvidia.com/gpu.
	if _, err := Parse([]byte("model: H100-SXM5-80GB\ngpus: 1\nmig:\n  0: [3g.40gb, 3g.40gb]\n" + pod("nvidia.com/gpu", "0/1") + "allocatable:\n  nvidia.com/gpu: [\"0/0\", \"0/1\"]\n")); err != nil {
		t.Errorf("single-strategy scenario refused: %v", err)
	}
}

func TestDRAScenario(t *testing.T) {
	s, err := Load("../examples/dra-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, snap := fetchSimulated(t, s)
	var devices []string
	for _, cl := range snap.Claims {
		if cl.Pod == "llm-finetune-0" {
			if cl.ClaimName != "finetune-gpus" || cl.Driver != "gpu.nvidia.com" || cl.Pool != "dra-node" {
				t.Errorf("claim = %+v", cl)
			}
			devices = append(devices, cl.Device)
		}
	}
	if strings.Join(devices, ",") != "gpu-0,gpu-1,gpu-2,gpu-3" || len(snap.Claims) != 6 {
		t.Errorf("claims = %+v", snap.Claims)
	}
	// The device plugin offers only the GPUs the DRA driver does not publish.
	if got := snap.Allocatable["nvidia.com/gpu"]; strings.Join(got, ",") != UUID(6)+","+UUID(7) {
		t.Errorf("device-plugin allocatable = %v", got)
	}
	// The ResourceSlice maps each device to its NVML UUID.
	rs := n.buildResourceSlices()
	if len(rs.Items) != 1 || len(rs.Items[0].Spec.Devices) != 6 || *rs.Items[0].Spec.NodeName != "dra-node" {
		t.Fatalf("slices = %+v", rs.Items)
	}
	if d := rs.Items[0].Spec.Devices[4]; d.Name != "gpu-4" || *d.Attributes["uuid"].StringValue != UUID(4) {
		t.Errorf("device 4 = %+v", d)
	}

	for _, tt := range []struct{ yaml, want string }{
		{"gpus: 2\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        claim: x\n        devices: [\"0\"]\n", "pods[0].containers[0].claim: needs a dra section"},
		{"gpus: 2\ndra:\n  devices: [\"0\"]\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        claim: x\n        devices: [\"1\"]\n", `pods[0].containers[0].devices[0]: "1" is not among dra.devices`},
		{"gpus: 2\ndra:\n  devices: [\"0::1\"]\n", "dra.devices[0]: a DRA driver publishes whole GPUs or MIG instances"},
		{"gpus: 2\ndra:\n  devices: [\"0\"]\npods:\n  - namespace: a\n    name: b\n    containers:\n      - name: c\n        claim: x\n        resource: nvidia.com/gpu\n        devices: [\"0\"]\n", "a claim or a resource, not both"},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tt.yaml, err, tt.want)
		}
	}
}

// fetchSimulated starts the scenario's node and reads its pod-resources
// socket through the real client.
func fetchSimulated(t *testing.T, sc *Scenario) (*Node, *podresources.Snapshot) {
	t.Helper()
	n, err := Start(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	c, err := podresources.New(podresources.Config{Socket: n.Socket, Timeout: 2 * time.Second, Matcher: resource.MustMatcher(resource.DefaultNVIDIA...)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n, snap
}
