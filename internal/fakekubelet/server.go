// Package fakekubelet serves the kubelet's pod-resources API on a unix
// socket from a Source, for the simulated node and the tests. It lives
// apart from the podresources client so that the production exporter does
// not carry a server it never runs.
package fakekubelet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Source produces the replies a Server sends. The simulated node implements
// it from its scenario; tests implement it to inject faults.
type Source interface {
	List(ctx context.Context) (*podresourcesv1.ListPodResourcesResponse, error)
	Allocatable(ctx context.Context) (*podresourcesv1.AllocatableResourcesResponse, error)
}

// Server serves the kubelet's pod-resources API on a unix socket from a
// Source. It lets the simulated node and the tests drive the real Client
// over a real socket instead of a stand-in.
type Server struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	// StartupEmpty, when set before Listen, makes the Server answer as a
	// kubelet that has just started: no pods and nothing allocatable, for
	// that long after Listen (a real one did so for about 0.6 s in 2 of 3
	// restarts, until its checkpoints were read and the device plugins had
	// registered again).
	StartupEmpty time.Duration

	src  Source
	grpc *grpc.Server
	mu   sync.Mutex
	done chan struct{}
	// rng orders each reply as the kubelet might; seeded, so that a
	// failing test fails again.
	rng        *rand.Rand
	emptyUntil time.Time
}

// NewServer returns a Server answering from src.
func NewServer(src Source, opts ...grpc.ServerOption) *Server {
	s := &Server{src: src, grpc: grpc.NewServer(opts...), rng: rand.New(rand.NewPCG(1, 2))}
	podresourcesv1.RegisterPodResourcesListerServer(s.grpc, s)
	return s
}

// Listen binds the socket (replacing a stale one) and serves in the
// background until Stop.
func (s *Server) Listen(socket string) error {
	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	s.mu.Lock()
	s.emptyUntil = time.Now().Add(s.StartupEmpty)
	s.done = make(chan struct{})
	done := s.done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = s.grpc.Serve(l)
	}()
	return nil
}

// Stop closes the socket and open connections at once, as a dying kubelet does.
func (s *Server) Stop() {
	s.grpc.Stop()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

// List implements the pod-resources API.
func (s *Server) List(ctx context.Context, _ *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	list, err := s.src.List(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.emptyUntil) {
		return &podresourcesv1.ListPodResourcesResponse{}, nil
	}
	return kubeletList(list, s.rng), nil
}

// GetAllocatableResources implements the pod-resources API.
func (s *Server) GetAllocatableResources(ctx context.Context, _ *podresourcesv1.AllocatableResourcesRequest) (*podresourcesv1.AllocatableResourcesResponse, error) {
	alloc, err := s.src.Allocatable(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.emptyUntil) {
		return &podresourcesv1.AllocatableResourcesResponse{}, nil
	}
	return kubeletAllocatable(alloc, s.rng), nil
}
