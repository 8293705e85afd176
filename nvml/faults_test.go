package nvml

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// TestRunRetriesInitUntilTheDriverAppears runs the background loop against a
// driver that is missing for the first attempts, as when the driver
// container finishes installing after the exporter started: the loop keeps
// retrying on its own, serves devices once Init succeeds, never calls NVML
// before that, and shuts NVML down when stopped.
func TestRunRetriesInitUntilTheDriverAppears(t *testing.T) {
	m := newMockNode(t, 4)
	const failures = 3
	var inits, shutdowns, early atomic.Int32
	m.srv.InitFunc = func() gonvml.Return {
		if inits.Add(1) <= failures {
			return gonvml.ERROR_DRIVER_NOT_LOADED
		}
		return gonvml.SUCCESS
	}
	m.srv.ShutdownFunc = func() gonvml.Return { shutdowns.Add(1); return gonvml.SUCCESS }
	count := m.srv.DeviceGetCountFunc
	m.srv.DeviceGetCountFunc = func() (int, gonvml.Return) {
		if inits.Load() <= failures {
			early.Add(1)
		}
		return count()
	}
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: time.Hour, RetryInterval: 10 * time.Millisecond, Now: m.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	testkit.Eventually(t, 5*time.Second, "devices after the driver appeared", func() bool {
		snap := s.Snapshot()
		return snap.Up && len(snap.Devices) == 4
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if got := s.Errors()["init"]; got != failures {
		t.Errorf("init errors = %d, want %d", got, failures)
	}
	if early.Load() != 0 {
		t.Errorf("NVML device calls made %d times before Init succeeded", early.Load())
	}
	if shutdowns.Load() != 1 {
		t.Errorf("Shutdown called %d times, want once", shutdowns.Load())
	}
}

// TestRunWithoutDriverNeverShutsDown: Shutdown without a successful Init is
// an NVML error; a node without a driver must stop cleanly without it.
func TestRunWithoutDriverNeverShutsDown(t *testing.T) {
	m := newMockNode(t, 1)
	var shutdowns atomic.Int32
	m.srv.InitFunc = func() gonvml.Return { return gonvml.ERROR_LIBRARY_NOT_FOUND }
	m.srv.ShutdownFunc = func() gonvml.Return { shutdowns.Add(1); return gonvml.SUCCESS }
	s := NewSampler(m.srv, Config{RetryInterval: 5 * time.Millisecond, Now: m.clock.Now})
	stop := runSampler(s)
	testkit.Eventually(t, 5*time.Second, "a few init retries", func() bool { return s.Errors()["init"] >= 3 })
	stop()
	if snap := s.Snapshot(); snap.Up || snap.Err == nil {
		t.Fatalf("snapshot without a driver = %+v", snap)
	}
	if shutdowns.Load() != 0 {
		t.Fatalf("Shutdown called %d times without a successful Init", shutdowns.Load())
	}
}

// TestGPULostMidRun loses one GPU of four between polls, in each call the
// sampler makes: its readings vanish at once, the loss is counted once (the
// device is no longer polled), the other three keep their numbers, and the
// GPU comes back at the next rediscovery if the driver serves it again.
func TestGPULostMidRun(t *testing.T) {
	for _, via := range []string{"samples", "rates", "memory"} {
		t.Run(via, func(t *testing.T) { testGPULost(t, via) })
	}
}

func testGPULost(t *testing.T, via string) {
	m := newMockNode(t, 4)
	for i := range m.util {
		m.util[i] = uint32(10 * (i + 1))
		m.used[i] = uint64(i+1) << 30
	}
	var lost atomic.Bool
	polled := 0
	d := m.dev(2)
	samples, rates, mem := d.GetSamplesFunc, d.GetUtilizationRatesFunc, d.GetMemoryInfo_v2Func
	d.GetSamplesFunc = func(st gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
		polled++
		switch {
		case via == "rates":
			return 0, nil, gonvml.ERROR_NOT_SUPPORTED
		case via == "samples" && lost.Load():
			return 0, nil, gonvml.ERROR_GPU_IS_LOST
		}
		return samples(st, last)
	}
	d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
		polled++
		if via == "rates" && lost.Load() {
			return gonvml.Utilization{}, gonvml.ERROR_GPU_IS_LOST
		}
		return rates()
	}
	d.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		polled++
		if via == "memory" && lost.Load() {
			return gonvml.Memory_v2{}, gonvml.ERROR_GPU_IS_LOST
		}
		return mem()
	}
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: 5 * time.Second, RediscoverInterval: time.Minute, Now: m.clock.Now})
	s.Poll()
	if n := len(s.Snapshot().Devices); n != 4 {
		t.Fatalf("%d devices before the fault", n)
	}
	lostUUID := d.UUID
	lost.Store(true)
	m.clock.Advance(5 * time.Second)
	s.Poll()
	polled = 0
	for i := 0; i < 5; i++ {
		got := byUUID(s.Snapshot())
		if _, ok := got[lostUUID]; ok || len(got) != 3 {
			t.Fatalf("poll %d after the loss: devices %v", i, got)
		}
		for _, k := range []int{0, 1, 3} {
			r := got[m.dev(k).UUID]
			if r.DutyCycle != float64(10*(k+1)) || r.MemoryUsed != uint64(k+1)<<30 {
				t.Fatalf("poll %d: surviving device %d = duty %v mem %d", i, k, r.DutyCycle, r.MemoryUsed)
			}
		}
		m.clock.Advance(5 * time.Second)
		s.Poll()
	}
	if got := s.Errors(); got["gpu_lost"] != 1 || len(got) != 1 {
		t.Fatalf("errors = %v after five polls, want gpu_lost 1 and nothing else", got)
	}
	if polled != 0 {
		t.Fatalf("lost GPU polled %d times after it was dropped", polled)
	}

	// The driver serves the GPU again: the next rediscovery brings it back.
	lost.Store(false)
	m.clock.Advance(time.Minute)
	s.Poll()
	if r, ok := byUUID(s.Snapshot())[lostUUID]; !ok || r.MemoryUsed != 3<<30 {
		t.Fatalf("recovered GPU after rediscovery = %+v (%v)", r, ok)
	}
	if got := s.Errors()["gpu_lost"]; got != 1 {
		t.Fatalf("gpu_lost = %d after recovery, want 1", got)
	}
}

// TestUnsupportedAndUnknownReturns: calls answering NOT_SUPPORTED or UNKNOWN
// cost the device only the reading concerned, never the device or the others.
func TestUnsupportedAndUnknownReturns(t *testing.T) {
	m := newMockNode(t, 4)
	for i := range m.util {
		m.util[i] = 50
		m.used[i] = 1 << 30
	}
	// 0: no utilization at all (samples and rates NOT_SUPPORTED).
	m.dev(0).GetSamplesFunc = func(gonvml.SamplingType, uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
		return 0, nil, gonvml.ERROR_NOT_SUPPORTED
	}
	rates := 0
	m.dev(0).GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
		rates++
		return gonvml.Utilization{}, gonvml.ERROR_NOT_SUPPORTED
	}
	// 1: memory UNKNOWN in both calls.
	m.dev(1).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_UNKNOWN }
	// 2: UUID UNKNOWN: the device cannot be named, so it is skipped.
	m.dev(2).GetUUIDFunc = func() (string, gonvml.Return) { return "", gonvml.ERROR_UNKNOWN }
	s := m.sampler(time.Minute)
	for i := 0; i < 3; i++ {
		s.Poll()
		m.clock.Advance(5 * time.Second)
	}
	got := byUUID(s.Snapshot())
	if len(got) != 3 {
		t.Fatalf("devices = %v, want 3 (the one without a UUID skipped)", got)
	}
	if r := got[m.dev(0).UUID]; r.HasDutyCycle || !r.HasMemory || r.MemoryUsed != 1<<30 {
		t.Errorf("device without utilization = %+v", r)
	}
	if rates != 1 {
		t.Errorf("unsupported utilization rates asked %d times, want once", rates)
	}
	if r := got[m.dev(1).UUID]; r.HasMemory || !r.HasDutyCycle || r.DutyCycle != 50 {
		t.Errorf("device with unknown memory = %+v", r)
	}
	if r := got[m.dev(3).UUID]; !r.HasDutyCycle || r.DutyCycle != 50 || !r.HasMemory {
		t.Errorf("healthy device = %+v", r)
	}
	e := s.Errors()
	// Memory UNKNOWN on each of 3 polls; the UUID once, at discovery.
	if e["unknown"] != 4 || e["not_supported"] != 0 {
		t.Errorf("errors = %v, want unknown 4 and no not_supported (a fallback is not an error)", e)
	}
}

// TestHungCallLeavesSnapshotReadable blocks an NVML call inside a poll, as a
// wedged driver does. The poll hangs, but everything scrapes read
// (Snapshot, Errors, Polls) answers at once with the last complete view,
// whose Taken stops moving: that is what the collector's staleness check
// sees. When the call returns, polling resumes.
func TestHungCallLeavesSnapshotReadable(t *testing.T) {
	m := newMockNode(t, 2)
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: 10 * time.Millisecond, Now: m.clock.Now})
	s.Poll()
	before := s.Snapshot()

	entered, release := make(chan struct{}), make(chan struct{})
	var hang atomic.Bool
	hang.Store(true)
	healthy := m.dev(1).GetMemoryInfo_v2Func
	m.dev(1).GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		if hang.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return healthy()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("poll never reached the hanging call")
	}
	m.clock.Advance(time.Minute)

	begin := time.Now()
	for i := 0; i < 100; i++ {
		snap := s.Snapshot()
		_ = s.Errors()
		if snap != before || !snap.Up || len(snap.Devices) != 2 {
			t.Fatalf("snapshot changed during a hung poll: %+v", snap)
		}
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("reading the snapshot took %v while a poll hung", d)
	}
	polls := s.Polls()
	time.Sleep(50 * time.Millisecond) // five poll intervals
	if s.Polls() != polls {
		t.Fatal("a poll started while the previous one hung")
	}

	close(release)
	testkit.Eventually(t, 5*time.Second, "a fresh snapshot after the call returned", func() bool {
		return s.Snapshot().Taken.After(before.Taken)
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the hang ended and its context was cancelled")
	}
}
