package testkit

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	start := time.Unix(1000, 0)
	c := NewClock(start)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.Advance(time.Second); _ = c.Now() }()
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(start.Add(10 * time.Second)) {
		t.Fatalf("Now = %v after ten 1s advances from %v", got, start)
	}
	c.Set(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Set did not set")
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Second, "third poll", func() bool { n++; return n >= 3 })
}

func TestLeftTempDirs(t *testing.T) {
	dir := t.TempDir()
	if left := LeftTempDirs(dir); len(left) != 0 {
		t.Fatalf("empty dir: %v", left)
	}
	for _, d := range []string{"kube-gpu-exporter-sim-123", "unrelated"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if left := LeftTempDirs(dir); len(left) != 1 || filepath.Base(left[0]) != "kube-gpu-exporter-sim-123" {
		t.Fatalf("left = %v, want the simulated node's directory", left)
	}
}
