package testkit

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
)

// Kubelet is a pod-resources Source whose replies and faults a test
// controls while a real Client talks to it over a real socket. Change its
// fields after it is served only through Set.
type Kubelet struct {
	mu sync.Mutex
	// ListReply and AllocReply are the replies to List and Allocatable.
	ListReply  *podresourcesv1.ListPodResourcesResponse
	AllocReply *podresourcesv1.AllocatableResourcesResponse
	// Delay makes List wait that long first, or until the caller gives up.
	Delay time.Duration
	// Err makes List fail with it.
	Err error

	held    chan struct{} // non-nil: List blocks until it is closed
	calls   atomic.Int64
	running atomic.Int64
}

// NewKubelet returns a Kubelet answering with list and alloc.
func NewKubelet(list *podresourcesv1.ListPodResourcesResponse, alloc *podresourcesv1.AllocatableResourcesResponse) *Kubelet {
	return &Kubelet{ListReply: list, AllocReply: alloc}
}

// Set changes the Kubelet under its lock, so that a served Kubelet can be
// changed while handlers read it.
func (k *Kubelet) Set(fn func(*Kubelet)) {
	k.mu.Lock()
	fn(k)
	k.mu.Unlock()
}

// Hold makes List calls block, as a hung kubelet does, until Release or
// until the caller gives up.
func (k *Kubelet) Hold() {
	k.mu.Lock()
	if k.held == nil {
		k.held = make(chan struct{})
	}
	k.mu.Unlock()
}

// Release lets the held List calls, and those to come, go on.
func (k *Kubelet) Release() {
	k.mu.Lock()
	if k.held != nil {
		close(k.held)
		k.held = nil
	}
	k.mu.Unlock()
}

// Calls returns how many List calls reached the Kubelet.
func (k *Kubelet) Calls() int64 { return k.calls.Load() }

// Running returns how many List calls have not returned yet: a handler
// that outlives its caller's deadline shows here.
func (k *Kubelet) Running() int64 { return k.running.Load() }

// List implements fakekubelet.Source.
func (k *Kubelet) List(ctx context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	k.calls.Add(1)
	k.running.Add(1)
	defer k.running.Add(-1)
	k.mu.Lock()
	held, delay := k.held, k.Delay
	k.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	// Read the reply after waiting, so that a Set during the wait counts.
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.Err != nil {
		return nil, k.Err
	}
	return k.ListReply, nil
}

// Allocatable implements fakekubelet.Source.
func (k *Kubelet) Allocatable(context.Context) (*podresourcesv1.AllocatableResourcesResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.AllocReply, nil
}

// ServeKubelet serves src on a socket in a fresh directory until the test
// ends and returns the server and the socket's path. The directory is a
// short one of its own, not t.TempDir(): unix socket paths are limited to
// 108 bytes, which a long test name exceeds.
func ServeKubelet(t testing.TB, src fakekubelet.Source) (*fakekubelet.Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kge-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	srv := fakekubelet.NewServer(src)
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, sock
}
