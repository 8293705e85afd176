package nvml

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// A lost GPU leaves the event set: NVML cannot unregister it, and a set
// holding it answers every wait with GPU_IS_LOST, so the other GPUs' Xids
// would never arrive. The sampler builds a set without it; when the GPU is
// back after a reset it is registered again (its old registration is dead,
// as the driver's is) and its Xids count again. Every set is freed once.
// losableNode is two mock H100s with the event mock installed; GPU 1
// answers GPU_IS_LOST while gone is set.
func losableNode(t *testing.T) (m *mockNode, ev *nvmltest.Events, gone *atomic.Bool) {
	m = newMockNode(t, 2)
	var energy nvmltest.EnergyCounter
	ev = &nvmltest.Events{}
	ev.Install(&m.srv.Interface)
	for i := range 2 {
		nvmltest.Apply(&m.dev(i).Device, h100Profile(&energy))
	}
	gone = new(atomic.Bool)
	m.dev(1).GetPowerUsageFunc = func() (uint32, gonvml.Return) {
		if gone.Load() {
			return 0, gonvml.ERROR_GPU_IS_LOST
		}
		return 300_000, gonvml.SUCCESS
	}
	return m, ev, gone
}

// runSampler runs s until the returned stop is called (stop waits for Run
// to return; calling it again is harmless).
func runSampler(s *Sampler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	return func() { cancel(); <-done }
}

func TestLostGPULeavesTheEventSet(t *testing.T) {
	m, ev, gone := losableNode(t)
	ev.Track(m.dev(0), &m.dev(0).Device)
	ev.Track(m.dev(1), &m.dev(1).Device)
	var now atomic.Int64
	now.Store(time.Unix(1_800_000_000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Add(int64(time.Second))) } // a poll's worth each call
	s := NewSampler(m.srv, Config{Window: time.Minute, Interval: 20 * time.Millisecond, RediscoverInterval: 30 * time.Second, Now: clock, Telemetry: true, Health: true, Events: true})
	stop := runSampler(s)
	defer stop()
	xid := func(dev int, code uint64) uint64 {
		return byUUID(s.Snapshot())[m.dev(dev).UUID].Xid[code]
	}

	ev.Inject(m.dev(1), 79, 0xFFFFFFFF, 0xFFFFFFFF)
	testkit.Eventually(t, 5*time.Second, "Xid 79 counted", func() bool { return xid(1, 79) == 1 })
	gone.Store(true)
	ev.Lose(m.dev(1))
	testkit.Eventually(t, 5*time.Second, "lost GPU dropped", func() bool { return len(s.Snapshot().Lost) == 1 })

	ev.Inject(m.dev(0), 13, 0xFFFFFFFF, 0xFFFFFFFF)
	testkit.Eventually(t, 5*time.Second, "the other GPU's Xid counted while one is lost", func() bool { return xid(0, 13) == 1 })

	gone.Store(false)
	ev.Restore(m.dev(1))
	testkit.Eventually(t, 10*time.Second, "GPU back after rediscovery", func() bool { return len(s.Snapshot().Lost) == 0 && len(s.Snapshot().Devices) == 2 })
	// A double-bit ECC error: the driver reports a double-bit event and
	// Xid 48; registered for Xids only, the GPU counts it once.
	ev.InjectDoubleBit(m.dev(1))
	testkit.Eventually(t, 5*time.Second, "the reset GPU's Xid counted", func() bool { return xid(1, 48) == 1 })
	time.Sleep(100 * time.Millisecond) // room for a second count, were the double-bit event registered
	if n := xid(1, 48); n != 1 {
		t.Errorf("a double-bit error counted %d times, want once", n)
	}
	if n := xid(1, 79); n != 1 {
		t.Errorf("Xid 79 of the reset GPU = %d, want its count from before the loss", n)
	}
	if sets, bad := ev.Live(); sets != 1 || bad != 0 {
		t.Errorf("%d event sets live, %d bad frees; want the one in use", sets, bad)
	}
	stop()
	if !ev.Freed() {
		t.Error("event sets left unfreed at shutdown")
	}
	if errs := s.Errors(); errs["event_wait"] != 0 || errs["event_register"] != 0 {
		t.Errorf("errors %v", errs)
	}
}
