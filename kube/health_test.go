package kube

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	clienttesting "k8s.io/client-go/testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
)

// refused is what a dial to a closed port returns.
func refused() error {
	return &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api/v1/pods", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED},
	}}
}

func forbidden(verb, resource string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "",
		fmt.Errorf(`User "system:serviceaccount:monitoring:kube-gpu-exporter" cannot %s resource %q in API group "" at the cluster scope`, verb, resource))
}

func TestCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{forbidden("list", "pods"), CauseForbidden},
		{apierrors.NewUnauthorized("Unauthorized"), CauseUnauthorized},
		{&url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, CauseTLS},
		{&url.Error{Op: "Get", URL: "https://x", Err: x509.HostnameError{Host: "x", Certificate: &x509.Certificate{}}}, CauseTLS},
		{refused(), CauseRefused},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")}, CauseUnreachable},
		{apierrors.NewServiceUnavailable("starting"), CauseServer},
		{apierrors.NewNotFound(schema.GroupResource{Group: "resource.k8s.io", Resource: "resourceslices"}, ""), CauseNotFound},
		{errors.New("something"), CauseOther},
	} {
		if got := Cause(tc.err); got != tc.want {
			t.Errorf("Cause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if u := forbiddenUser(forbidden("watch", "nodes")); u != "system:serviceaccount:monitoring:kube-gpu-exporter" {
		t.Errorf("forbiddenUser = %q", u)
	}
}

func (api *fakeAPI) breakWatches(ev *watch.Event) {
	api.mu.Lock()
	ws := api.watches
	api.watches = nil
	api.mu.Unlock()
	for _, w := range ws {
		if ev == nil {
			w.Stop() // the stream just ends, as when the server goes away
		} else {
			w.breakWith(*ev)
		}
	}
}

func (api *fakeAPI) lists(resource string) int {
	api.mu.Lock()
	defer api.mu.Unlock()
	n := 0
	for _, r := range api.requests {
		if r.verb == "list" && r.resource == resource {
			n++
		}
	}
	return n
}

// A restarted API server answers a watch resumed from the old resource
// version with a 410 inside the stream: the source is unhealthy from then
// until the relist, which follows within about a second.
func TestWatcherExpiredWatchUnhealthyUntilRelisted(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	w := startWatcher(t, api)
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return w.Snapshot().Healthy })
	lists := api.lists("pods")

	api.breakWatches(&watch.Event{Type: watch.Error, Object: &metav1.Status{
		Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version: 5 (9)",
	}})
	testkit.Eventually(t, time.Second, "unhealthy after 410", func() bool { return !w.Snapshot().Healthy })
	start := time.Now()
	testkit.Eventually(t, 4*time.Second, "healthy after relist", func() bool { return w.Snapshot().Healthy })
	if api.lists("pods") <= lists {
		t.Error("healthy again without a relist")
	}
	if s := w.Snapshot(); s.ListErrors+s.WatchErrors != 0 {
		t.Errorf("an expired watch counted as an error: %+v", s)
	}
	t.Logf("caught up %v after the 410", time.Since(start))
}

// During an outage the requests are retried with a short cap rather than
// the reflector's backoff of up to 30s, every failure counts, and a watch
// that could resume from the old resource version once the server is back
// is replaced by a relist.
func TestWatcherCatchesUpPromptlyAfterOutage(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	w := startWatcher(t, api)
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return w.Snapshot().Healthy })
	time.Sleep(1100 * time.Millisecond) // not a "very short watch" to the reflector

	api.mu.Lock()
	api.down, api.downErr = true, refused()
	api.mu.Unlock()
	api.breakWatches(nil)
	testkit.Eventually(t, 2*time.Second, "unhealthy", func() bool { return !w.Snapshot().Healthy })
	time.Sleep(6 * time.Second)
	s := w.Snapshot()
	if s.WatchErrors+s.ListErrors < 6 {
		t.Errorf("only %d failed requests in 6s: retries back off too far", s.WatchErrors+s.ListErrors)
	}
	lists := api.lists("pods")
	api.recover()
	start := time.Now()
	testkit.Eventually(t, 5*time.Second, "healthy after recovery", func() bool { return w.Snapshot().Healthy })
	if api.lists("pods") <= lists {
		t.Error("healthy again without a relist")
	}
	t.Logf("caught up %v after recovery", time.Since(start))
}

// logWatcher runs a Watcher on client with a logger writing to the
// returned buffer at level INFO, the default.
func logWatcher(t *testing.T, api *fakeAPI, dra bool) (*Watcher, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode, DRA: dra}, logger)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		w.Wait()
		if t.Failed() {
			t.Logf("watcher logs:\n%s", logs.String())
		}
	})
	w.Start(ctx)
	return w, logs
}

func warnLines(logs *testkit.LogBuffer, substr string) []string {
	var out []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func TestWatcherForbiddenWarnsOnceWithUser(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode))
	api.client.PrependReactor("list", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbidden("list", a.GetResource().Resource)
	})
	w, logs := logWatcher(t, api, false)
	testkit.Eventually(t, 10*time.Second, "retried", func() bool { return w.Snapshot().ListErrors >= 4 })
	for _, res := range []string{"pods", "nodes"} {
		lines := warnLines(logs, "resource="+res)
		if len(lines) != 1 {
			t.Fatalf("%d WARN lines for %s, want 1:\n%s", len(lines), res, logs.String())
		}
		for _, want := range []string{"cause=forbidden", "verb=list", `user=system:serviceaccount:monitoring:kube-gpu-exporter`} {
			if !strings.Contains(lines[0], want) {
				t.Errorf("WARN line lacks %q: %s", want, lines[0])
			}
		}
	}
	if _, err := w.Read(context.Background()); err == nil {
		t.Error("Read succeeded although every list is forbidden")
	}
}

func TestWatcherRefusedWarnsAndCounts(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode))
	api.down, api.downErr = true, refused()
	w, logs := logWatcher(t, api, false)
	testkit.Eventually(t, 5*time.Second, "list errors counted", func() bool { return w.Errors()["list"] >= 4 })
	if len(warnLines(logs, `cause="connection refused"`)) == 0 {
		t.Errorf("no WARN naming the refused connection:\n%s", logs.String())
	}
}

// A missing permission on ResourceSlices disables DRA with a WARN and its
// own error count; pods and nodes stay healthy.
func TestWatcherDRAForbiddenKeepsSourceUp(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	deny := func(a clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbidden(a.GetVerb(), "resourceslices")
	}
	api.client.PrependReactor("list", "resourceslices", deny)
	api.client.PrependWatchReactor("resourceslices", func(a clienttesting.Action) (bool, watch.Interface, error) {
		_, _, err := deny(a)
		return true, nil, err
	})
	w, logs := logWatcher(t, api, true)
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return w.Snapshot().Healthy })
	testkit.Eventually(t, 5*time.Second, "dra errors counted", func() bool { return w.Errors()["dra"] > 0 })
	specs, err := w.Read(context.Background())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if specs.DRA != nil || len(specs.Containers) != 1 {
		t.Errorf("specs = %+v, want pods without DRA", specs)
	}
	if e := w.Errors(); e["list"] != 0 || e["watch"] != 0 {
		t.Errorf("Errors = %v, want only dra", e)
	}
	lines := warnLines(logs, "resource=resourceslices")
	if len(lines) != 1 || !strings.Contains(lines[0], "cause=forbidden") || !strings.Contains(lines[0], "DRA") {
		t.Errorf("WARN lines for resourceslices: %q", lines)
	}
}
