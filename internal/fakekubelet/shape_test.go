package fakekubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// recorded reads a reply of the real kubelet that test/node recorded
// (go test ./test/node -update): a pod whose containers hold one and two
// GPUs, one of them on two NUMA nodes, next to the exporter's own pod.
func recorded(t *testing.T, name string, into proto.Message) {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, into); err != nil {
		t.Fatal(err)
	}
}

// grouped is what a Source may give for the same devices: one entry per
// container, resource and topology, holding all of their IDs.
func grouped(devs []*podresourcesv1.ContainerDevices) []*podresourcesv1.ContainerDevices {
	var out []*podresourcesv1.ContainerDevices
	index := map[string]int{}
	for _, d := range devs {
		k := d.ResourceName + "|" + numa(d)
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, &podresourcesv1.ContainerDevices{ResourceName: d.ResourceName, Topology: d.Topology})
		}
		out[i].DeviceIds = append(out[i].DeviceIds, d.DeviceIds...)
	}
	return out
}

// numa lists an entry's NUMA nodes; "none" without topology.
func numa(d *podresourcesv1.ContainerDevices) string {
	if d.Topology == nil {
		return "none"
	}
	var ids []string
	for _, n := range d.Topology.Nodes {
		ids = append(ids, fmt.Sprint(n.GetID()))
	}
	return "[" + strings.Join(ids, " ") + "]"
}

// source serves fixed replies.
type source struct {
	list  *podresourcesv1.ListPodResourcesResponse
	alloc *podresourcesv1.AllocatableResourcesResponse
}

func (s source) List(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	return s.list, nil
}

func (s source) Allocatable(context.Context) (*podresourcesv1.AllocatableResourcesResponse, error) {
	return s.alloc, nil
}

// entries lists a reply's device entries, one line each, in reply order.
func entries(list *podresourcesv1.ListPodResourcesResponse, alloc *podresourcesv1.AllocatableResourcesResponse) []string {
	var out []string
	line := func(where string, d *podresourcesv1.ContainerDevices) string {
		return fmt.Sprintf("%s %s %v numa %s", where, d.ResourceName, d.DeviceIds, numa(d))
	}
	for _, p := range list.GetPodResources() {
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				out = append(out, line(p.Namespace+"/"+p.Name+"/"+c.Name, d))
			}
		}
	}
	for _, d := range alloc.GetDevices() {
		out = append(out, line("allocatable", d))
	}
	return out
}

// The fake kubelet, given the recorded devices grouped as a Source may
// group them, answers with exactly the real kubelet's entries (one per
// device and NUMA node), in an order that changes between calls.
func TestReplyShapeMatchesRealKubelet(t *testing.T) {
	list := &podresourcesv1.ListPodResourcesResponse{}
	alloc := &podresourcesv1.AllocatableResourcesResponse{}
	recorded(t, "kubelet-list.json", list)
	recorded(t, "kubelet-allocatable.json", alloc)
	want := entries(list, alloc)
	// The recording must hold what the fakes once hid: a container with
	// two GPUs, and a GPU listed once for each of its two NUMA nodes.
	if !slices.ContainsFunc(want, func(e string) bool { return strings.HasPrefix(e, "e2e/multi/two ") }) ||
		!slices.ContainsFunc(want, func(e string) bool { return strings.HasSuffix(e, "numa [0]") }) ||
		len(slices.Compact(slices.Sorted(slices.Values(want)))) != len(want) {
		t.Fatalf("the recording lacks a two-GPU container or a device on NUMA node 0, or repeats an entry:\n%s", strings.Join(want, "\n"))
	}

	src := source{list: proto.Clone(list).(*podresourcesv1.ListPodResourcesResponse), alloc: &podresourcesv1.AllocatableResourcesResponse{Devices: grouped(alloc.Devices)}}
	for _, p := range src.list.PodResources {
		for _, c := range p.Containers {
			c.Devices = grouped(c.Devices)
		}
	}
	dir, err := os.MkdirTemp("", "kge-shape-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv := NewServer(src)
	if err := srv.Listen(filepath.Join(dir, "kubelet.sock")); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := podresourcesv1.NewPodResourcesListerClient(conn)
	orders := map[string]bool{}
	for range 5 {
		l, err := api.List(context.Background(), &podresourcesv1.ListPodResourcesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := api.GetAllocatableResources(context.Background(), &podresourcesv1.AllocatableResourcesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := entries(l, a)
		orders[strings.Join(got, "\n")] = true
		if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Fatalf("fake reply:\n%s\nreal kubelet's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if len(orders) < 2 {
		t.Error("the fake answered five times in one order; the kubelet's changes")
	}
}
