package main

import (
	"net"
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

// TestSIGTERMDuringKubeletCall sends SIGTERM while the accounting loop is
// held inside a kubelet call that does not answer (a pod-resources server
// that never replies, with --kubelet.timeout far beyond the grace period).
// Meanwhile scrapes are served at once from the kubelet's last answer: the
// kubelet is never called on the scrape path. On SIGTERM the listener
// closes at once, so no new scrape is taken in, the held call is cancelled
// without being logged as a kubelet outage, and the process ends cleanly,
// exit code 0, within its 5s drain bound (6s here) — well inside the
// kubelet's default 30s grace period.
func TestSIGTERMDuringKubeletCall(t *testing.T) {
	t.Parallel()
	k := newTestKubelet(2, 2)
	sock := serveKubelet(t, k)
	e := launch(t, plainReady, "--simulate.scenario="+gpuOnlyScenario(t, 2), "--kubelet.pod-resources-socket="+sock,
		"--kubelet.timeout=60s", "--kubelet.cache-ttl=0s", "--nvml.poll-interval=200ms")

	k.Hold()
	calls := k.Calls()
	deadline := time.Now().Add(5 * time.Second)
	for k.Calls() == calls {
		if time.Now().After(deadline) {
			t.Fatal("the accounting loop never called the kubelet")
		}
		time.Sleep(10 * time.Millisecond)
	}
	begin := time.Now()
	body := scrape(t, e.Addr)
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("a scrape took %v while the kubelet call is held", took)
	}
	if !strings.Contains(body, `kube_gpu_exporter_up{source="kubelet"} 1`) || !strings.Contains(body, `pod="job-1"`) {
		t.Errorf("a scrape during the held call does not serve the kubelet's last answer:\n%s", body)
	}

	begin = time.Now()
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
		t.Fatalf("exit code %d after SIGTERM during a kubelet call\nlog:\n%s", code, e.Log())
	}
	t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
	if strings.Contains(e.Log(), "kubelet pod-resources unavailable") {
		t.Errorf("shutdown logged as a kubelet outage:\n%s", e.Log())
	}
}
