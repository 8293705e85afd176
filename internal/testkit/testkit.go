// Package testkit holds the test doubles and helpers the tests of every
// package share, so that a fake clock, a wait loop or a fake kubelet
// behaves the same wherever it is used and is fixed in one place.
package testkit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clock is a fake clock, safe for concurrent use: time moves only when the
// test says so, which makes windows, staleness and backoff deterministic.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Eventually polls cond every 10 ms until it holds, failing the test with
// what if it does not within timeout. It polls instead of sleeping a fixed
// time so that a fast machine is not slowed and a slow one is not flaky.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TempDirPatterns are the temporary directories the simulated node, the
// soak script and the test builds create; a test run must leave none of them.
var TempDirPatterns = []string{"kube-gpu-exporter-sim-*", "kube-gpu-exporter-test-*", "kge-soak-*"}

// LeftTempDirs returns the entries of dir matching TempDirPatterns.
func LeftTempDirs(dir string) []string {
	var found []string
	for _, p := range TempDirPatterns {
		m, _ := filepath.Glob(filepath.Join(dir, p))
		found = append(found, m...)
	}
	return found
}

// RunLeakChecked runs the tests with TMPDIR pointing at a private directory,
// which the processes they start inherit, and then fails the run if any
// directory matching TempDirPatterns is left in it (a process killed
// instead of stopped, a missing Close). The private directory keeps other
// test processes running in parallel from being blamed, and is removed at
// the end so that a failing run leaves nothing in the real TMPDIR either.
// after runs between the tests and the check, to remove what the run keeps
// until the end on purpose (tooltest.RemoveBuilt). It returns the exit code
// for os.Exit.
func RunLeakChecked(m *testing.M, after func()) int {
	private, err := os.MkdirTemp("", "kube-gpu-exporter-tmp-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: private TMPDIR: %v\n", err)
		return 1
	}
	defer os.RemoveAll(private)
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", private)
	code := m.Run()
	if after != nil {
		after()
	}
	if had {
		os.Setenv("TMPDIR", old)
	} else {
		os.Unsetenv("TMPDIR")
	}
	if left := LeftTempDirs(private); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left temporary directories behind: %v\n", left)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// EventuallyNil polls fn every 50 ms until it returns nil, failing the test
// with what and fn's last error if it does not within timeout. It polls
// less often than Eventually because each try is usually a real call, such
// as an RPC through a client that counts its failures.
func EventuallyNil(t testing.TB, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogBuffer is a log destination safe for the concurrent writes of the
// goroutines under test (informers, pollers, HTTP handlers).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count returns how many times substr was written.
func (l *LogBuffer) Count(substr string) int { return strings.Count(l.String(), substr) }
