package simulate

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

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
	c, err := kubernetes.NewForConfig(n.RESTConfig)
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
}
