package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// switchKubelet is a KubeletSource whose reply a test changes.
type switchKubelet struct {
	mu   sync.Mutex
	snap *podresources.Snapshot
	err  error
}

func (k *switchKubelet) set(s *podresources.Snapshot, err error) {
	k.mu.Lock()
	k.snap, k.err = s, err
	k.mu.Unlock()
}

func (k *switchKubelet) Read(context.Context) (*podresources.Snapshot, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.snap, k.err
}

func (k *switchKubelet) Errors() map[string]uint64 { return nil }

// A kubelet listing more unknown device IDs than are remembered must not
// silence the state changes that follow: the kubelet going down is logged.
func TestStateChangesLoggedAfterManyUnmatchedIDs(t *testing.T) {
	s, _ := dgxH100(t)
	var ids []string
	for i := range maxLoggedIDs + 500 {
		ids = append(ids, fmt.Sprintf("GPU-%08x-dead-4000-8000-000000000000", i))
	}
	k := &switchKubelet{snap: &podresources.Snapshot{Containers: []podresources.ContainerDevices{{
		Namespace: "ns", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: ids,
	}}}}
	var buf testkit.LogBuffer
	c := New(Config{NodeName: "n", Logger: slog.New(slog.NewTextHandler(&buf, nil))}, s, k, nil)

	c.Gather(context.Background())
	if n := buf.Count("matches no NVML device; its container"); n != maxLoggedIDs {
		t.Errorf("unmatched IDs logged one by one: %d, want the bound %d", n, maxLoggedIDs)
	}
	if n := buf.Count("not_logged=500"); n != 1 {
		t.Errorf("IDs past the bound summed up %d times, want once", n)
	}
	c.Gather(context.Background()) // the same IDs: nothing new to say
	if n := buf.Count("matches no NVML device"); n != maxLoggedIDs {
		t.Errorf("second scrape logged again: %d lines", n)
	}

	k.set(nil, errors.New("connection refused"))
	c.Gather(context.Background())
	c.Gather(context.Background())
	if n := buf.Count("kubelet pod-resources unavailable"); n != 1 {
		t.Errorf("kubelet outage logged %d times, want once", n)
	}
	k.set(&podresources.Snapshot{}, nil)
	c.Gather(context.Background())
	if n := buf.Count("recovered: kubelet-down"); n != 1 {
		t.Errorf("kubelet recovery logged %d times, want once", n)
	}
	k.set(nil, errors.New("connection refused"))
	c.Gather(context.Background())
	if n := buf.Count("kubelet pod-resources unavailable"); n != 2 {
		t.Errorf("second kubelet outage logged: %d lines in all, want 2", n)
	}
}

// An ID that stops being unmatched and comes back is logged again; the log
// remembers only the last scrape's IDs.
func TestUnmatchedIDLogForgets(t *testing.T) {
	var buf testkit.LogBuffer
	l := newIDLog(slog.New(slog.NewTextHandler(&buf, nil)), 2)
	for _, ids := range [][]string{{"a"}, {"a"}, {}, {"a", "b", "c"}} {
		l.update(ids)
	}
	if got := buf.Count("device_id=a"); got != 2 {
		t.Errorf("a logged %d times, want 2 (first seen, seen again)", got)
	}
	if got := buf.Count("device_id=c"); got != 0 {
		t.Errorf("c past the bound logged one by one")
	}
	if len(l.seen) != 2 {
		t.Errorf("remembered %d IDs, want the bound 2", len(l.seen))
	}
}
