package tooltest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// chromiumFlags run Chromium headless as root on a machine without network:
// without the background-networking flags it waits on name lookups.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--hide-scrollbars",
}

// Chromium runs Debian's chromium on url with a fresh profile and the extra
// args (--dump-dom, --screenshot=FILE, --window-size=W,H) and returns its
// standard output. A missing chromium skips the test, or fails it under CI.
func Chromium(t testing.TB, url string, args ...string) []byte {
	t.Helper()
	bin := Require(t, "chromium")
	profile := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append(append(append([]string{}, chromiumFlags...), "--user-data-dir="+profile), args...)
	cmd := exec.CommandContext(ctx, bin, append(all, url)...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// limitedBuffer keeps the last 8 KiB written: Chromium's log of a headless
// run is long and mostly about the missing D-Bus.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if n := len(l.b); n > 8<<10 {
		l.b = l.b[n-8<<10:]
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
