package podresources

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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

// rateLimited is what the kubelet answers once its limiter (100/s, burst
// 10, shared by all clients) is exhausted.
var rateLimited = status.Error(codes.ResourceExhausted, "rejected by rate limit")

func onePod() *podresourcesv1.ListPodResourcesResponse {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{gpuPod("ml", "train", "main", "nvidia.com/gpu", gpuUUID)}}
}

// settledGoroutines returns the goroutine count once it stops falling, so
// connections and handlers that are on their way out are not counted.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 40; i++ {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n && i >= 4 {
			return m
		}
		n = min(n, m)
	}
	return n
}

func fetchOK(c *Client, pods int) func() error {
	return func() error {
		s, err := c.Read(context.Background())
		if err != nil {
			return err
		}
		if len(s.Containers) != pods {
			return fmt.Errorf("%d containers, want %d", len(s.Containers), pods)
		}
		return nil
	}
}

// TestFaultCycleRecoversWithoutLeaks drives one Client through every kubelet
// fault in turn, three times: socket absent, kubelet killed and restarted on
// the same path, a kubelet slower than the call timeout, and the kubelet's
// rate limiter. Each fault must fail the call with its own reason, the
// Client must recover by itself, and neither the Client nor the kubelet may
// be left with more goroutines than it started with.
func TestFaultCycleRecoversWithoutLeaks(t *testing.T) {
	// Warm up gRPC's process-wide goroutines so they are not taken for a leak.
	wc, wsrv, _ := start(t, &testkit.Kubelet{ListReply: onePod(), AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}, Config{})
	if err := fetchOK(wc, 1)(); err != nil {
		t.Fatal(err)
	}
	wc.Close()
	wsrv.Stop()
	base := settledGoroutines()

	f := &testkit.Kubelet{ListReply: onePod(), AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	c, err := New(Config{Socket: sock, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Socket absent at start: the call fails, New did not.
	if _, err := c.Read(context.Background()); status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Fatalf("no socket: err = %v, want Unavailable", err)
	}
	var srv *fakekubelet.Server
	serve := func() {
		srv = fakekubelet.NewServer(f)
		if err := srv.Listen(sock); err != nil {
			t.Fatal(err)
		}
	}
	serve()
	testkit.EventuallyNil(t, 10*time.Second, "first connection after the socket appeared", fetchOK(c, 1))

	const rounds = 4
	var perRound []int
	for round := 0; round < rounds; round++ {
		// Killed and restarted on the same path.
		srv.Stop()
		if _, err := c.Read(context.Background()); err == nil {
			t.Fatalf("round %d: fetch succeeded with the kubelet stopped", round)
		}
		serve()
		testkit.EventuallyNil(t, 10*time.Second, "recovery after a kubelet restart", fetchOK(c, 1))

		// Slower than the call timeout: the call gives up in time and the
		// kubelet's handler sees the cancellation instead of piling up.
		f.Hold()
		begin := time.Now()
		if _, err := c.Read(context.Background()); status.Code(errors.Unwrap(err)) != codes.DeadlineExceeded {
			t.Fatalf("round %d: hung kubelet: err = %v, want DeadlineExceeded", round, err)
		}
		if d := time.Since(begin); d > 3*time.Second {
			t.Fatalf("round %d: fetch against a hung kubelet took %v with a 300ms timeout", round, d)
		}
		testkit.EventuallyNil(t, 5*time.Second, "hung handler cancelled", func() error {
			if n := f.Running(); n != 0 {
				return fmt.Errorf("%d List handlers still running", n)
			}
			return nil
		})
		f.Release()

		// Rate limited, then the limit lifts.
		f.Set(func(f *testkit.Kubelet) { f.Err = rateLimited })
		if _, err := c.Read(context.Background()); status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
			t.Fatalf("round %d: rate limited: err = %v", round, err)
		}
		f.Set(func(f *testkit.Kubelet) { f.Err = nil })
		if err := fetchOK(c, 1)(); err != nil {
			t.Fatalf("round %d: after the rate limit lifted: %v", round, err)
		}
		perRound = append(perRound, settledGoroutines())
	}

	errs := c.Errors()
	if errs["timeout"] != rounds || errs["rate_limited"] != rounds {
		t.Errorf("errors = %v, want %d timeouts and %d rate_limited", errs, rounds, rounds)
	}
	if errs["unavailable"] < rounds+1 {
		t.Errorf("errors = %v, want at least %d unavailable (absent socket and each restart)", errs, rounds+1)
	}
	// Faults must not accumulate goroutines: the last round ends where the
	// first did, give or take gRPC's connection housekeeping; one goroutine
	// left behind per round would exceed the slack.
	if perRound[rounds-1] > perRound[0]+rounds-2 {
		t.Errorf("goroutines after each fault round = %v: growing", perRound)
	}

	c.Close()
	srv.Stop()
	testkit.EventuallyNil(t, 5*time.Second, "goroutines back to the baseline", func() error {
		if n := settledGoroutines(); n > base+1 {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

// TestRateLimitedIsCountedAndShared: while the kubelet rate-limits, every
// call is counted as rate_limited, and concurrent scrapes still make one
// call between them, so the exporter does not make the limiting worse.
func TestRateLimitedIsCountedAndShared(t *testing.T) {
	// The first call hangs in the kubelet, so every scrape joins it.
	f := &testkit.Kubelet{ListReply: onePod(), AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	f.Hold()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	srv := fakekubelet.NewServer(f)
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := New(Config{Socket: sock, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Read(context.Background()); err != nil {
				failed.Add(1)
			}
		}()
	}
	testkit.EventuallyNil(t, 5*time.Second, "first call reached the kubelet", func() error {
		if f.Calls() == 0 {
			return errors.New("no call yet")
		}
		return nil
	})
	wg.Wait()
	if n := f.Calls(); n != 1 {
		t.Fatalf("20 concurrent scrapes made %d kubelet calls, want 1", n)
	}
	if failed.Load() != 20 {
		t.Fatalf("%d of 20 scrapes failed on a timed-out shared call, want all", failed.Load())
	}

	f.Release()
	f.Set(func(f *testkit.Kubelet) { f.Err = rateLimited })
	for i := 0; i < 3; i++ {
		_, err := c.Read(context.Background())
		if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != codes.ResourceExhausted {
			t.Fatalf("fetch %d: err = %v, want the kubelet's ResourceExhausted", i, err)
		}
	}
	if got := c.Errors(); got["rate_limited"] != 3 || got["timeout"] != 1 {
		t.Fatalf("errors = %v, want rate_limited 3 and timeout 1", got)
	}
	f.Set(func(f *testkit.Kubelet) { f.Err = nil })
	if err := fetchOK(c, 1)(); err != nil {
		t.Fatal(err)
	}
}

// bigReply builds a List reply of about size bytes: pods with many
// time-sliced replica IDs, as a node with heavy GPU sharing reports.
func bigReply(t *testing.T, size int) *podresourcesv1.ListPodResourcesResponse {
	t.Helper()
	const idsPerPod = 1000
	list := &podresourcesv1.ListPodResourcesResponse{}
	for i := 0; proto.Size(list) < size; i++ {
		ids := make([]string, idsPerPod)
		for j := range ids {
			ids[j] = fmt.Sprintf("%s::%d", gpuUUID, i*idsPerPod+j)
		}
		list.PodResources = append(list.PodResources, gpuPod("batch", fmt.Sprintf("worker-%04d", i), "main", "nvidia.com/gpu.shared", ids...))
	}
	return list
}

// TestTwentyMiBReply: a 20 MiB reply is served with the default 64 MiB
// limit, and a limit below the reply fails with its own reason, not as if
// the kubelet were rate limiting (both are ResourceExhausted in gRPC).
func TestTwentyMiBReply(t *testing.T) {
	list := bigReply(t, 20<<20)
	size := proto.Size(list)
	if size < 20<<20 || size > 24<<20 {
		t.Fatalf("reply is %d bytes, want about 20 MiB", size)
	}
	f := &testkit.Kubelet{ListReply: list, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	c, _, _ := start(t, testkit.NewKubelet(f.ListReply, f.AllocReply), Config{Timeout: 20 * time.Second}) // default MaxRecvMsgSize: 64 MiB
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatalf("20 MiB reply with the default limit: %v", err)
	}
	if len(s.Containers) != len(list.PodResources) {
		t.Fatalf("%d containers, want %d", len(s.Containers), len(list.PodResources))
	}
	ids := 0
	for _, ctr := range s.Containers {
		ids += len(ctr.DeviceIDs)
	}
	if want := len(list.PodResources) * 1000; ids != want {
		t.Fatalf("%d device IDs arrived, want %d", ids, want)
	}

	small, _, _ := start(t, testkit.NewKubelet(f.ListReply, f.AllocReply), Config{Timeout: 20 * time.Second, MaxRecvMsgSize: 16 << 20})
	if _, err := small.Read(context.Background()); err == nil {
		t.Fatal("20 MiB reply accepted by a 16 MiB limit")
	}
	got := small.Errors()
	if got["message_too_large"] != 1 || got["rate_limited"] != 0 {
		t.Fatalf("errors = %v, want message_too_large 1 (raise --kubelet.max-recv-msg-size), not rate_limited", got)
	}
}

// TestMalformedReplyServesTheRest sends, over the real socket, a reply mixing
// good entries with entries no one can attribute. The bad ones are dropped
// and counted by reason; every good container and every device ID the
// collector must judge (including unknown ones) still arrives.
func TestMalformedReplyServesTheRest(t *testing.T) {
	const unknownUUID = "GPU-deadbeef-0000-4000-8000-000000000000"
	list := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		gpuPod("", "no-namespace", "c", "nvidia.com/gpu", gpuUUID),
		gpuPod("ns", "", "c", "nvidia.com/gpu", gpuUUID),
		gpuPod("ns", "no-container-name", "", "nvidia.com/gpu", gpuUUID),
		gpuPod("ml", "train", "main", "nvidia.com/gpu", gpuUUID),
		gpuPod("ml", "train", "main", "nvidia.com/gpu", migUUID), // the same container listed again
		{Namespace: "ml", Name: "twice", Containers: []*podresourcesv1.ContainerResources{
			{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{migUUID}}}},
			{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{gpuUUID}}}},
		}},
		gpuPod("ml", "unknown-ids", "main", "nvidia.com/gpu", unknownUUID, "not-a-device-id"),
		gpuPod("ml", "no-ids", "main", "nvidia.com/gpu"),
		gpuPod("net", "nic", "main", "example.com/nic", "nic0"),
		{Namespace: "ml", Name: "empty-containers", Containers: []*podresourcesv1.ContainerResources{{}, {Name: "x", Devices: []*podresourcesv1.ContainerDevices{{}}}}},
		{},
	}}
	alloc := &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{
		{ResourceName: "nvidia.com/gpu", DeviceIds: []string{gpuUUID, unknownUUID}},
		{ResourceName: "example.com/nic", DeviceIds: []string{"nic0"}},
		{},
	}}
	c, _, _ := start(t, &testkit.Kubelet{ListReply: list, AllocReply: alloc}, Config{})
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ctr := range s.Containers {
		got = append(got, fmt.Sprintf("%s/%s/%s %v", ctr.Namespace, ctr.Pod, ctr.Container, ctr.DeviceIDs))
	}
	// A container listed in several entries holds the devices of all.
	want := []string{
		"ml/train/main [" + gpuUUID + " " + migUUID + "]",
		"ml/twice/c [" + gpuUUID + " " + migUUID + "]",
		"ml/unknown-ids/main [" + unknownUUID + " not-a-device-id]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("containers =\n%v\nwant\n%v", got, want)
	}
	if e := c.Errors(); e["empty_name"] != 3 || len(e) != 1 {
		t.Fatalf("errors = %v, want empty_name 3", e)
	}
	if a := s.Allocatable; len(a) != 1 || len(a["nvidia.com/gpu"]) != 2 {
		t.Fatalf("allocatable = %v", a)
	}
}

var fuzzMatcher = resource.MustMatcher(resource.DefaultNVIDIA...)

// FuzzConvert feeds arbitrary bytes, decoded as the kubelet's two replies,
// to Convert: it must never panic, and what it keeps must be attributable,
// unique, sorted, of GPU resources only, and add up with what it dropped.
func FuzzConvert(f *testing.F) {
	for _, seed := range []struct {
		list  *podresourcesv1.ListPodResourcesResponse
		alloc *podresourcesv1.AllocatableResourcesResponse
	}{
		{onePod(), &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{gpuUUID}}}}},
		{&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
			gpuPod("", "p", "c", "nvidia.com/gpu", gpuUUID), gpuPod("a", "b", "c", "nvidia.com/mig-1g.10gb", migUUID),
			gpuPod("a", "b", "c", "nvidia.com/mig-1g.10gb", migUUID), gpuPod("x", "y", "z", "example.com/nic", "nic0"),
		}}, nil},
		{&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
			draPod("a", "b", "c", "claim", claimed("gpu.nvidia.com", "pool", "gpu-0"), claimed("gpu.nvidia.com", "pool", "gpu-0"), claimed("gpu.nvidia.com", "", "gpu-1")),
			draPod("", "b", "c", "claim", claimed("gpu.nvidia.com", "pool", "gpu-2")), draPod("x", "y", "z", "nic", claimed("nic.example.com", "pool", "eth0")),
		}}, nil},
	} {
		l, err := proto.Marshal(seed.list)
		if err != nil {
			f.Fatal(err)
		}
		a, err := proto.Marshal(seed.alloc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(l, a)
	}
	f.Fuzz(func(t *testing.T, listBytes, allocBytes []byte) {
		list := &podresourcesv1.ListPodResourcesResponse{}
		if proto.Unmarshal(listBytes, list) != nil {
			return
		}
		alloc := &podresourcesv1.AllocatableResourcesResponse{}
		if proto.Unmarshal(allocBytes, alloc) != nil {
			alloc = nil
		}
		s := Convert(list, alloc, fuzzMatcher)

		// Every ID of a named GPU entry is held by its container, each
		// unnamed entry is counted, and nothing else is kept.
		type key = [4]string
		want := map[key]map[string]bool{}
		unnamed := 0
		for _, pod := range list.GetPodResources() {
			for _, ctr := range pod.GetContainers() {
				for _, dev := range ctr.GetDevices() {
					if _, ok := fuzzMatcher.Vendor(dev.GetResourceName()); !ok || len(dev.GetDeviceIds()) == 0 {
						continue
					}
					if pod.GetNamespace() == "" || pod.GetName() == "" || ctr.GetName() == "" {
						unnamed++
						continue
					}
					k := key{pod.GetNamespace(), pod.GetName(), ctr.GetName(), dev.GetResourceName()}
					if want[k] == nil {
						want[k] = map[string]bool{}
					}
					for _, id := range dev.GetDeviceIds() {
						want[k][id] = true
					}
				}
			}
		}
		for reason := range s.Dropped {
			if reason != "empty_name" {
				t.Fatalf("unknown drop reason %q", reason)
			}
		}
		if s.Dropped["empty_name"] != unnamed {
			t.Fatalf("dropped %d unnamed entries, want %d", s.Dropped["empty_name"], unnamed)
		}
		if len(s.Containers) != len(want) {
			t.Fatalf("kept %d containers, want %d", len(s.Containers), len(want))
		}
		for i, c := range s.Containers {
			if c.Namespace == "" || c.Pod == "" || c.Container == "" {
				t.Fatalf("kept a container without a name: %+v", c)
			}
			k := key{c.Namespace, c.Pod, c.Container, c.Resource}
			ids := want[k]
			if len(c.DeviceIDs) != len(ids) || !slices.IsSorted(c.DeviceIDs) {
				t.Fatalf("%v holds %q, want each of %v once, sorted", k, c.DeviceIDs, ids)
			}
			for j, id := range c.DeviceIDs {
				if !ids[id] || (j > 0 && c.DeviceIDs[j-1] == id) {
					t.Fatalf("%v holds %q, want each of %v once", k, c.DeviceIDs, ids)
				}
			}
			if i > 0 {
				p := s.Containers[i-1]
				if slices.Compare([]string{p.Namespace, p.Pod, p.Container, p.Resource}, k[:]) >= 0 {
					t.Fatalf("containers not sorted at %d: %+v after %+v", i, c, p)
				}
			}
		}
		for res := range s.Allocatable {
			if _, ok := fuzzMatcher.Vendor(res); !ok {
				t.Fatalf("allocatable kept non-GPU resource %q", res)
			}
		}

		// Claimed devices of the driver are kept once each or dropped.
		droppedClaims := map[string]int{}
		claims := ConvertClaims(list, resource.DefaultDRADrivers(), droppedClaims)
		distinct := map[ContainerClaim]bool{}
		for _, c := range claims {
			if c.Namespace == "" || c.Pod == "" || c.Container == "" || c.Pool == "" || c.Device == "" || c.Driver != resource.DefaultDRADriver {
				t.Fatalf("kept claim %+v", c)
			}
			c.ClaimName = ""
			if distinct[c] {
				t.Fatalf("kept %+v twice", c)
			}
			distinct[c] = true
		}
		for reason := range droppedClaims {
			if reason != "empty_name" && reason != "malformed_claim" {
				t.Fatalf("unknown claim drop reason %q", reason)
			}
		}
	})
}
