package kube

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
)

// informerStacks returns the stacks of the goroutines running client-go's
// informer machinery, which only a Watcher starts in this test binary.
func informerStacks() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "k8s.io/client-go/tools/cache.") {
			out = append(out, g)
		}
	}
	return out
}

// Wait holds until Start's context is cancelled and then returns only once
// every informer goroutine has: shutdown leaves no watch behind.
func TestWatcherWaitJoinsInformers(t *testing.T) {
	// Watchers of earlier tests that do not wait may still be stopping.
	eventually(t, 10*time.Second, "earlier tests' informers gone", func() bool { return len(informerStacks()) == 0 })
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode, DRA: true}, slog.New(slog.DiscardHandler))
	w.Wait() // not started: returns at once

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 10*time.Second)
	defer syncCancel()
	if !w.WaitForSync(syncCtx) {
		t.Fatal("informers did not sync")
	}
	if len(informerStacks()) == 0 {
		t.Fatal("no informer goroutine found while running: the check below would prove nothing")
	}

	waited := make(chan struct{})
	go func() { defer close(waited); w.Wait() }()
	select {
	case <-waited:
		t.Fatal("Wait returned while the informers still run")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return within 10s of cancelling Start's context")
	}
	if s := informerStacks(); len(s) > 0 {
		t.Errorf("%d informer goroutines left after Wait:\n%s", len(s), strings.Join(s, "\n\n"))
	}
}
