package podresources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func gpuPod(ns, name, ctr, res string, ids ...string) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Namespace: ns, Name: name, Containers: []*podresourcesv1.ContainerResources{{
		Name:    ctr,
		Devices: []*podresourcesv1.ContainerDevices{{ResourceName: res, DeviceIds: ids}},
	}}}
}

func start(t *testing.T, f *testkit.Kubelet, cfg Config) (*Client, *fakekubelet.Server, string) {
	t.Helper()
	srv, sock := testkit.ServeKubelet(t, f)
	cfg.Socket = sock
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv, sock
}

func TestFetchConvertsGPUResources(t *testing.T) {
	f := &testkit.Kubelet{
		ListReply: &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
			gpuPod("ml", "train", "main", "nvidia.com/gpu", gpuUUID),
			gpuPod("net", "router", "main", "example.com/nic", "nic0"),
			gpuPod("batch", "a", "w", "nvidia.com/gpu.shared", gpuUUID+"::0"),
			{Namespace: "kube-system", Name: "coredns", Containers: []*podresourcesv1.ContainerResources{{Name: "coredns", CpuIds: []int64{1}}}},
		}},
		AllocReply: &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{
			{ResourceName: "nvidia.com/gpu", DeviceIds: []string{gpuUUID}},
			{ResourceName: "example.com/nic", DeviceIds: []string{"nic0"}},
		}},
	}
	c, _, _ := start(t, f, Config{})
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Containers) != 2 || s.Containers[0].Namespace != "batch" || s.Containers[1].Pod != "train" {
		t.Fatalf("containers = %+v", s.Containers)
	}
	if got := s.Allocatable["nvidia.com/gpu"]; len(got) != 1 || got[0] != gpuUUID {
		t.Fatalf("allocatable = %v", s.Allocatable)
	}
	if _, ok := s.Allocatable["example.com/nic"]; ok {
		t.Fatal("non-GPU resource kept")
	}
}

func TestFetchLargeReply(t *testing.T) {
	// 300 pods with long names and many replica IDs: well over gRPC's 4 MiB default.
	var pods []*podresourcesv1.PodResources
	for i := 0; i < 300; i++ {
		ids := make([]string, 600)
		for j := range ids {
			ids[j] = fmt.Sprintf("%s::%d", gpuUUID, j)
		}
		pods = append(pods, gpuPod("ns", fmt.Sprintf("pod-%03d-%s", i, strings.Repeat("x", 200)), "c", "nvidia.com/gpu.shared", ids...))
	}
	list := &podresourcesv1.ListPodResourcesResponse{PodResources: pods}
	if n := proto.Size(list); n < 8<<20 {
		t.Fatalf("reply only %d bytes; the test needs one over 4 MiB", n)
	}
	f := &testkit.Kubelet{ListReply: list, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	// The kubelet sends the 180,000 IDs one entry each, about 20 MiB:
	// time enough to encode and decode that under the race detector, as
	// this tests size, not speed.
	c, _, _ := start(t, f, Config{MaxRecvMsgSize: 64 << 20, Timeout: time.Minute})
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Containers) != 300 {
		t.Fatalf("got %d containers, want 300", len(s.Containers))
	}

	// The same reply with gRPC's default limit fails: the flag matters.
	small, _, _ := start(t, f, Config{MaxRecvMsgSize: 4 << 20, Timeout: time.Minute})
	if _, err := small.Read(context.Background()); status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
		t.Fatalf("4 MiB client: err = %v, want ResourceExhausted", err)
	}
}

func TestFetchTimeout(t *testing.T) {
	f := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}, Delay: 5 * time.Second}
	c, _, _ := start(t, f, Config{Timeout: 200 * time.Millisecond})
	begin := time.Now()
	_, err := c.Read(context.Background())
	if err == nil {
		t.Fatal("want timeout error")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Fetch took %v despite a 200ms timeout", d)
	}
	if c.Errors()["timeout"] != 1 {
		t.Fatalf("errors = %v, want one timeout", c.Errors())
	}
}

func TestFetchCallerDeadline(t *testing.T) {
	f := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}, Delay: time.Second}
	c, _, _ := start(t, f, Config{Timeout: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
}

func TestFetchSharesCallsAndCaches(t *testing.T) {
	f := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}, Delay: 200 * time.Millisecond}
	c, _, _ := start(t, f, Config{CacheTTL: time.Minute})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Read(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.Calls(); n != 1 {
		t.Fatalf("kubelet saw %d List calls for 51 fetches, want 1", n)
	}
}

func TestFetchSurvivesKubeletRestart(t *testing.T) {
	f := &testkit.Kubelet{
		ListReply:  &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{gpuPod("a", "b", "c", "nvidia.com/gpu", gpuUUID)}},
		AllocReply: &podresourcesv1.AllocatableResourcesResponse{},
	}
	c, srv, sock := start(t, f, Config{Timeout: 500 * time.Millisecond, RestartGrace: time.Hour})
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// Within the grace period the last reply stands in for the kubelet's,
	// and both the failure and the stand-in are counted.
	if s, err := c.Read(context.Background()); err != nil || len(s.Containers) != 1 {
		t.Fatalf("while the kubelet restarts: %v, %+v", err, s)
	}
	if e := c.Errors(); e["restart_window"] != 1 || e["unavailable"] != 1 {
		t.Fatalf("errors = %v", e)
	}
	// After it, the outage is the answer.
	c.mu.Lock()
	c.suspectSince = c.suspectSince.Add(-2 * time.Hour)
	c.mu.Unlock()
	if _, err := c.Read(context.Background()); err == nil {
		t.Fatal("want an error once the kubelet has been down past the grace period")
	}
	srv2 := fakekubelet.NewServer(f)
	if err := srv2.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv2.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := c.Read(context.Background())
		if err == nil && len(s.Containers) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery within 10s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A kubelet restarting as a real one does: its socket gone, then no pods
// and nothing allocatable for a moment. Within the grace period every read
// gives the containers as they were.
func TestFetchBridgesKubeletRestart(t *testing.T) {
	list, alloc, want := kubeletShapedReply()
	c, srv, sock := start(t, testkit.NewKubelet(list, alloc), Config{Timeout: 500 * time.Millisecond, RestartGrace: 5 * time.Second})
	read := func(when string) {
		t.Helper()
		s, err := c.Read(context.Background())
		if err != nil || len(s.Containers) != len(want) {
			t.Fatalf("%s: %v, %d containers, want %d", when, err, len(s.Containers), len(want))
		}
	}
	read("before")
	srv.Stop()
	read("socket gone")
	srv2 := fakekubelet.NewServer(testkit.NewKubelet(list, alloc))
	srv2.StartupEmpty = 600 * time.Millisecond
	if err := srv2.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv2.Stop()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		read("restarting")
	}
	if n := c.Errors()["restart_window"]; n < 2 {
		t.Errorf("restart_window counted %d times: the restart was not bridged", n)
	}
}

func TestFetchSocketAbsentThenCreated(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	c, err := New(Config{Socket: sock, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(context.Background()); err == nil {
		t.Fatal("want an error without a socket")
	}
	f := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	srv := fakekubelet.NewServer(f)
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Read(context.Background()); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("client never connected to the new socket")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestConvertDropsMalformed(t *testing.T) {
	list := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		gpuPod("", "nameless-ns", "c", "nvidia.com/gpu", gpuUUID),
		gpuPod("ns", "p", "", "nvidia.com/gpu", gpuUUID),
		gpuPod("ns", "ok", "c", "nvidia.com/gpu", gpuUUID),
		gpuPod("ns", "ok", "c", "nvidia.com/gpu", migUUID),
		nil,
	}}
	s := Convert(list, nil, resource.MustMatcher(resource.DefaultNVIDIA...))
	if len(s.Containers) != 1 || fmt.Sprint(s.Containers[0].DeviceIDs) != fmt.Sprint([]string{gpuUUID, migUUID}) {
		t.Fatalf("containers = %+v", s.Containers)
	}
	if s.Dropped["empty_name"] != 2 || len(s.Dropped) != 1 {
		t.Fatalf("dropped = %v", s.Dropped)
	}
}

// A relative socket path (fk/rel.sock, ./fk/rel.sock) is the file under the
// working directory at start; gRPC alone would read its first element as
// an authority and never connect.
func TestRelativeSocketConnects(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("fk", 0o755); err != nil {
		t.Fatal(err)
	}
	srv := fakekubelet.NewServer(testkit.NewKubelet(&podresourcesv1.ListPodResourcesResponse{}, &podresourcesv1.AllocatableResourcesResponse{}))
	if err := srv.Listen(filepath.Join(dir, "fk", "rel.sock")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, sock := range []string{"fk/rel.sock", "./fk/rel.sock"} {
		c, err := New(Config{Socket: sock, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(context.Background()); err != nil {
			t.Errorf("%s: %v", sock, err)
		}
		c.Close()
	}
}

// Empty and malformed allocatable IDs are dropped and counted: counted as
// devices they inflated capacity and allocatable. A repeated ID is one
// device, as the kubelet lists a device once per NUMA node it reports.
func TestConvertDropsBadAllocatableIDs(t *testing.T) {
	alloc := &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{
		{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"", "junk", gpuUUID, gpuUUID}},
		{ResourceName: "amd.com/gpu", DeviceIds: []string{"0000:c1:00.0", "0000:c1:00.0"}},
	}}
	s := Convert(nil, alloc, resource.MustMatcher(resource.DefaultAll...))
	if got := s.Allocatable["nvidia.com/gpu"]; len(got) != 1 || got[0] != gpuUUID {
		t.Errorf("nvidia allocatable = %q", got)
	}
	if got := s.Allocatable["amd.com/gpu"]; len(got) != 1 {
		t.Errorf("amd allocatable = %q", got)
	}
	if s.DroppedAllocatable["invalid_device_id"] != 2 || len(s.DroppedAllocatable) != 1 {
		t.Errorf("dropped = %v", s.DroppedAllocatable)
	}
}
