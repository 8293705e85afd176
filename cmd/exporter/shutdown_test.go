package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// waitExit waits for a launched binary to exit within bound and returns its
// exit code and how long it took from since.
func waitExit(t *testing.T, e *tooltest.Exporter, since time.Time, bound time.Duration) (int, time.Duration) {
	t.Helper()
	select {
	case <-e.Exited():
	case <-time.After(bound):
		_ = e.Cmd.Process.Kill()
		<-e.Exited()
		t.Fatalf("still running %v after the signal\nlog:\n%s", bound, e.Log())
	}
	return e.Cmd.ProcessState.ExitCode(), time.Since(since)
}

// TestSignalsWhenIdle: SIGTERM (what the kubelet sends), SIGINT and SIGHUP
// (a closed terminal; no configuration is reloaded) end an idle exporter
// at once with exit code 0, cleaning up as on SIGTERM.
func TestSignalsWhenIdle(t *testing.T) {
	t.Parallel()
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		e := launch(t, plainReady, "--simulate")
		scrape(t, e.Addr)
		begin := time.Now()
		if err := e.Cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		code, took := waitExit(t, e, begin, 3*time.Second)
		if code != 0 {
			t.Errorf("%v: exit code %d\nlog:\n%s", sig, code, e.Log())
		}
		if !strings.Contains(e.Log(), "shutting down") {
			t.Errorf("%v: no shutdown logged:\n%s", sig, e.Log())
		}
		t.Logf("%v: exited in %v", sig, took.Round(time.Millisecond))
	}
}

// TestSIGTERMDuringScrape sends SIGTERM while a scrape is held inside a
// kubelet call that does not answer (a pod-resources server that never
// replies, with --kubelet.timeout far beyond the grace period). The
// listener closes at once, so no new scrape is taken in, and the process
// still ends cleanly, exit code 0, within its 5s drain bound (6s here) —
// well inside the kubelet's default 30s grace period.
func TestSIGTERMDuringScrape(t *testing.T) {
	t.Parallel()
	k := newTestKubelet(2, 2)
	sock := serveKubelet(t, k)
	e := launch(t, plainReady, "--simulate.scenario="+gpuOnlyScenario(t, 2), "--kubelet.pod-resources-socket="+sock,
		"--kubelet.timeout=60s", "--kubelet.cache-ttl=0s")

	k.Hold()
	calls := k.Calls()
	type result struct {
		body string
		err  error
	}
	scraped := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + e.Addr + "/metrics")
		var b []byte
		if err == nil {
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		scraped <- result{string(b), err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for k.Calls() == calls {
		if time.Now().After(deadline) {
			t.Fatal("the scrape never reached the kubelet")
		}
		time.Sleep(10 * time.Millisecond)
	}

	begin := time.Now()
	if err := e.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The listener closes at once: new connections are refused, not queued.
	refused := false
	for time.Since(begin) < 2*time.Second {
		c, err := net.DialTimeout("tcp", e.Addr, 200*time.Millisecond)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if !refused {
		t.Error("still accepting connections 2s after SIGTERM")
	}
	code, took := waitExit(t, e, begin, 6*time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM during a scrape\nlog:\n%s", code, e.Log())
	}
	select {
	case r := <-scraped:
		t.Logf("exited %v after SIGTERM; the held scrape ended with: %v", took.Round(time.Millisecond), r.err)
		// A scrape cut by shutdown is aborted: served, it would record a
		// kubelet outage on every rollout.
		if r.err == nil {
			t.Errorf("the scrape cut by shutdown was served:\n%s", r.body)
		}
		if strings.Contains(e.Log(), "kubelet pod-resources unavailable") {
			t.Errorf("shutdown logged as a kubelet outage:\n%s", e.Log())
		}
	case <-time.After(5 * time.Second):
		t.Error("the held scrape's connection outlived the process")
	}
}
