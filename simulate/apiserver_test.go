package simulate

import (
	"context"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
)

// TestInformersSyncAgainstSimulatedAPI runs the real kube.Watcher through
// client-go over HTTP against the simulated API server.
func TestInformersSyncAgainstSimulatedAPI(t *testing.T) {
	n, err := Start(Builtin(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, err := kube.NewClient(n.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	w := kube.NewWatcher(c, kube.Config{NodeName: n.Name}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.Start(ctx)
	if !w.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	s := w.Snapshot()
	if !s.Healthy || !s.Node.Found || len(s.Node.Allocatable) != 2 {
		t.Fatalf("snapshot: healthy=%v node=%+v", s.Healthy, s.Node)
	}
	var trainer float64
	for _, cr := range s.Containers {
		if cr.Pod == "trainer-0" {
			trainer = cr.Request
		}
	}
	if trainer != 4 {
		t.Fatalf("trainer request = %v, want 4 (containers %+v)", trainer, s.Containers)
	}
	ref, ok := s.ContainerByID("containerd://" + ContainerID("batch", "shared-a", "worker"))
	if !ok || ref.Pod != "shared-a" || ref.PodUID != PodUID("batch", "shared-a") {
		t.Fatalf("container lookup = %+v, %v", ref, ok)
	}
	// The scenario's labels and controllers name the pods' workloads.
	for pod, want := range map[[2]string]kube.Workload{
		{"ml-training", "trainer-0"}:  {Kind: "PyTorchJob", Name: "trainer"},
		{"inference", "llm-server-0"}: {Kind: "StatefulSet", Name: "llm-server"},
		{"batch", "shared-a"}:         {Kind: "Pod", Name: "shared-a"},
	} {
		if got, ok := s.PodWorkload(pod[0], pod[1]); !ok || got != want {
			t.Errorf("workload of %v = %+v, %v; want %+v", pod, got, ok, want)
		}
	}
}

// TestSimulatedResourceSlicesThroughInformer runs kube.Watcher with DRA
// against the simulated API server: the ResourceSlice list/watch, with its
// initial events and bookmark, is what client-go's informer expects.
func TestSimulatedResourceSlicesThroughInformer(t *testing.T) {
	s, err := Load("../examples/dra-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	client, err := kube.NewClient(n.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := kube.NewWatcher(client, kube.Config{NodeName: n.Name, DRA: true}, nil)
	w.Start(ctx)
	if !w.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	for !w.Snapshot().Healthy {
		if ctx.Err() != nil {
			t.Fatal("watches never opened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	snap := w.Snapshot()
	if len(snap.DRA) != 1 || snap.DRA[0] != (kube.DRADriver{Driver: "gpu.nvidia.com", Devices: 6}) {
		t.Errorf("DRA = %+v", snap.DRA)
	}
	if u, ok := snap.DRADeviceUUID("gpu.nvidia.com", "dra-node", "gpu-3"); !ok || u != UUID(3) {
		t.Errorf("gpu-3 = %q, %v", u, ok)
	}
}
