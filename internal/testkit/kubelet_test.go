package testkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func TestKubeletFaults(t *testing.T) {
	list := &podresourcesv1.ListPodResourcesResponse{}
	k := NewKubelet(list, &podresourcesv1.AllocatableResourcesResponse{})
	if got, err := k.List(context.Background()); err != nil || got != list {
		t.Fatalf("List = %v, %v; want the reply", got, err)
	}

	boom := errors.New("boom")
	k.Set(func(k *Kubelet) { k.Err = boom })
	if _, err := k.List(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("List err = %v, want %v", err, boom)
	}
	k.Set(func(k *Kubelet) { k.Err = nil; k.Delay = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.List(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("delayed List err = %v, want DeadlineExceeded", err)
	}
	k.Set(func(k *Kubelet) { k.Delay = 0 })

	k.Hold()
	done := make(chan error, 1)
	go func() { _, err := k.List(context.Background()); done <- err }()
	Eventually(t, time.Second, "held call running", func() bool { return k.Running() == 1 })
	select {
	case err := <-done:
		t.Fatalf("held List returned %v before Release", err)
	case <-time.After(20 * time.Millisecond):
	}
	k.Release()
	if err := <-done; err != nil {
		t.Fatalf("released List err = %v", err)
	}
	if n := k.Calls(); n != 4 {
		t.Fatalf("Calls = %d, want 4", n)
	}
	if n := k.Running(); n != 0 {
		t.Fatalf("Running = %d after every call returned", n)
	}
}
