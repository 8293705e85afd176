package podresources

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func uuidN(n int) string { return fmt.Sprintf("GPU-5151b5ae-7e33-b4f6-f5c3-%012d", n) }

func numa(nodes ...int64) *podresourcesv1.TopologyInfo {
	t := &podresourcesv1.TopologyInfo{}
	for _, n := range nodes {
		t.Nodes = append(t.Nodes, &podresourcesv1.NUMANode{ID: n})
	}
	return t
}

// entry is one ContainerDevices as the kubelet builds it: one device on one
// NUMA node.
func entry(res, id string, node int64) *podresourcesv1.ContainerDevices {
	return &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: []string{id}, Topology: numa(node)}
}

// kubeletShapedReply is what a real kubelet answers for a pod whose
// containers hold 1, 2 and 8 GPUs and two time-slicing replicas of one GPU,
// on a node whose GPU 3 reports both NUMA nodes: one entry per device and
// NUMA node (containerDevicesFromResourceDeviceInstances in
// pkg/kubelet/cm of Kubernetes).
func kubeletShapedReply() (*podresourcesv1.ListPodResourcesResponse, *podresourcesv1.AllocatableResourcesResponse, map[string][]string) {
	const gpu = "nvidia.com/gpu"
	want := map[string][]string{
		"one":    {uuidN(0)},
		"two":    {uuidN(1), uuidN(2)},
		"eight":  {uuidN(3), uuidN(4), uuidN(5), uuidN(6), uuidN(7), uuidN(8), uuidN(9), uuidN(10)},
		"shared": {uuidN(11) + "::0", uuidN(11) + "::1"},
	}
	pod := &podresourcesv1.PodResources{Namespace: "ml", Name: "train"}
	alloc := &podresourcesv1.AllocatableResourcesResponse{}
	for _, name := range []string{"one", "two", "eight", "shared"} {
		ctr := &podresourcesv1.ContainerResources{Name: name}
		for k, id := range want[name] {
			node := int64(k % 2)
			ctr.Devices = append(ctr.Devices, entry(gpu, id, node))
			alloc.Devices = append(alloc.Devices, entry(gpu, id, node))
			if id == uuidN(3) { // on both NUMA nodes: listed once for each
				ctr.Devices = append(ctr.Devices, entry(gpu, id, 1-node))
				alloc.Devices = append(alloc.Devices, entry(gpu, id, 1-node))
			}
		}
		pod.Containers = append(pod.Containers, ctr)
	}
	pod.Containers = append(pod.Containers, &podresourcesv1.ContainerResources{Name: "sidecar"})
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{pod}}, alloc, want
}

// A container with several GPUs is listed in one entry per device; each
// container must hold all of its GPUs, whatever the order of the entries,
// and a device on two NUMA nodes is one device.
func TestConvertKubeletShape(t *testing.T) {
	list, alloc, want := kubeletShapedReply()
	r := rand.New(rand.NewPCG(7, 7))
	for round := range 20 {
		for _, c := range list.PodResources[0].Containers {
			r.Shuffle(len(c.Devices), func(i, j int) { c.Devices[i], c.Devices[j] = c.Devices[j], c.Devices[i] })
		}
		r.Shuffle(len(alloc.Devices), func(i, j int) { alloc.Devices[i], alloc.Devices[j] = alloc.Devices[j], alloc.Devices[i] })
		s := Convert(list, alloc, resource.MustMatcher(resource.DefaultNVIDIA...))
		if len(s.Containers) != len(want) {
			t.Fatalf("round %d: %d containers, want %d: %+v", round, len(s.Containers), len(want), s.Containers)
		}
		for _, c := range s.Containers {
			if fmt.Sprint(c.DeviceIDs) != fmt.Sprint(want[c.Container]) {
				t.Errorf("round %d: %s holds %v, want %v", round, c.Container, c.DeviceIDs, want[c.Container])
			}
		}
		if got := len(s.Allocatable["nvidia.com/gpu"]); got != 13 {
			t.Errorf("round %d: %d allocatable, want 13: %v", round, got, s.Allocatable)
		}
		if len(s.Dropped)+len(s.DroppedAllocatable) != 0 {
			t.Errorf("round %d: dropped %v and %v from a well-formed reply", round, s.Dropped, s.DroppedAllocatable)
		}
	}
}

// The client reads the same reply through the fake kubelet, which answers
// in the kubelet's shape and order whatever its Source's grouping.
func TestFetchKubeletShape(t *testing.T) {
	list, alloc, want := kubeletShapedReply()
	c, _, _ := start(t, testkit.NewKubelet(list, alloc), Config{})
	for range 5 {
		c.mu.Lock()
		c.last = nil
		c.mu.Unlock()
		s, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, ctr := range s.Containers {
			if fmt.Sprint(ctr.DeviceIDs) != fmt.Sprint(want[ctr.Container]) {
				t.Errorf("%s holds %v, want %v", ctr.Container, ctr.DeviceIDs, want[ctr.Container])
			}
		}
	}
}

// clock is a settable time for the Client.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// A restarting kubelet lists no pods, and for a moment nothing
// allocatable, for about a second: the last reply is served through that
// window and counted, and an empty answer that lasts is believed.
func TestRestartWindowHoldsLastReply(t *testing.T) {
	list, alloc, want := kubeletShapedReply()
	k := testkit.NewKubelet(list, alloc)
	c, _, _ := start(t, k, Config{RestartGrace: 5 * time.Second})
	clk := &clock{t: time.Unix(1e9, 0)}
	c.now = clk.now
	read := func() *Snapshot {
		t.Helper()
		s, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		clk.t = clk.t.Add(time.Second)
		return s
	}
	if s := read(); len(s.Containers) != len(want) {
		t.Fatalf("first read: %+v", s.Containers)
	}
	empty := &podresourcesv1.ListPodResourcesResponse{}
	for _, restart := range []struct {
		name  string
		alloc *podresourcesv1.AllocatableResourcesResponse
	}{{"no pods", alloc}, {"no pods, nothing allocatable", &podresourcesv1.AllocatableResourcesResponse{}}} {
		k.Set(func(k *testkit.Kubelet) { k.ListReply, k.AllocReply = empty, restart.alloc })
		for i := range 3 {
			if s := read(); len(s.Containers) != len(want) || len(s.Allocatable["nvidia.com/gpu"]) != 13 {
				t.Fatalf("%s, read %d within the window: %d containers, allocatable %v", restart.name, i, len(s.Containers), s.Allocatable)
			}
		}
		k.Set(func(k *testkit.Kubelet) { k.ListReply, k.AllocReply = list, alloc })
		if s := read(); len(s.Containers) != len(want) {
			t.Fatalf("%s, after: %+v", restart.name, s.Containers)
		}
	}
	if n := c.Errors()["restart_window"]; n != 6 {
		t.Errorf("restart_window counted %d times, want 6", n)
	}
	// Emptiness that outlasts the grace period is the truth.
	k.Set(func(k *testkit.Kubelet) { k.ListReply = empty })
	var s *Snapshot
	for range 7 {
		s = read()
	}
	if len(s.Containers) != 0 {
		t.Fatalf("an empty kubelet is still held after the grace period: %+v", s.Containers)
	}
	// A node whose GPU pods end but whose other pods stay is no restart.
	k.Set(func(k *testkit.Kubelet) { k.ListReply = list })
	read()
	k.Set(func(k *testkit.Kubelet) {
		k.ListReply = &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Namespace: "kube-system", Name: "exporter"}}}
	})
	if s := read(); len(s.Containers) != 0 {
		t.Fatalf("GPU pods that ended are still served: %+v", s.Containers)
	}
}
