// Package tooltest finds the outside programs that end-to-end tests drive
// (prometheus, promtool, helm, kustomize). A test that lacks one skips on a
// developer's machine but fails under CI, where .ci/run installs every tool:
// a skipped end-to-end test must never pass for a green one.
package tooltest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/handoff"
)

// RepoRoot returns the repository root, found from this source file's path so
// that tests in any package agree on it.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Find returns the path of the named program, looked up in the repository's
// .tools/bin (where `make tools` installs Go-built tools) and then in PATH.
func Find(name string) (string, bool) {
	local := filepath.Join(RepoRoot(), ".tools", "bin", name)
	if fi, err := os.Stat(local); err == nil && !fi.IsDir() {
		return local, true
	}
	p, err := exec.LookPath(name)
	return p, err == nil
}

// Require returns the path of the named program or ends the test: a skip on a
// developer's machine, a failure when the CI environment variable is set.
func Require(t testing.TB, name string) string {
	t.Helper()
	if p, ok := Find(name); ok {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found in .tools/bin or PATH; CI must install it (see .ci/run)", name)
	}
	t.Skipf("%s not found in .tools/bin or PATH; install it (make tools / apt-get install prometheus) to run this test", name)
	return ""
}

// build is one command of this checkout, built at most once per test
// process.
type build struct {
	pkg, file, env string

	once sync.Once
	dir  string
	path string
	err  error
}

// The two commands the end-to-end tests run; they live for the test
// process, which is why they are package state.
var (
	exporterBuild = &build{pkg: "./cmd/exporter", file: "kube-gpu-exporter", env: "KUBE_GPU_EXPORTER_BINARY"}
	simBuild      = &build{pkg: "./cmd/kube-gpu-exporter-sim", file: "kube-gpu-exporter-sim", env: "KUBE_GPU_EXPORTER_SIM_BINARY"}
)

// ExporterBinary returns the production exporter binary: the file named by
// $KUBE_GPU_EXPORTER_BINARY (a release, a prebuilt binary on a machine
// without Go), or ./cmd/exporter of this checkout, built once per test
// process with cgo. RemoveBuilt deletes the build from TestMain.
func ExporterBinary(t testing.TB) string {
	t.Helper()
	return exporterBuild.binary(t)
}

// SimBinary returns the simulated node's exporter, which takes every flag of
// ExporterBinary plus --simulate and --simulate.scenario: the file named by
// $KUBE_GPU_EXPORTER_SIM_BINARY, or ./cmd/kube-gpu-exporter-sim of this
// checkout, built once per test process.
func SimBinary(t testing.TB) string {
	t.Helper()
	return simBuild.binary(t)
}

func (b *build) binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(b.env); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			t.Fatalf("%s: %v", b.env, err)
		}
		return abs
	}
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "kube-gpu-exporter-test-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, b.file)
		if b.err = goBuild(b.path, b.pkg); b.err != nil {
			b.err = fmt.Errorf("build %s: %w", b.pkg, b.err)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// goBuild builds pkg of this checkout into out with the cgo and version
// flags of scripts/build-flags.sh, the ones `make build` uses.
func goBuild(out, pkg string) error {
	flags := exec.Command("scripts/build-flags.sh", "ldflags")
	flags.Dir = RepoRoot()
	ldflags, err := flags.Output()
	if err != nil {
		return fmt.Errorf("scripts/build-flags.sh ldflags: %w", err)
	}
	cflags := exec.Command("scripts/build-flags.sh", "cgo-cflags")
	cflags.Dir = RepoRoot()
	cgo, err := cflags.Output()
	if err != nil {
		return fmt.Errorf("scripts/build-flags.sh cgo-cflags: %w", err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS="+strings.TrimSpace(string(cgo)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// RemoveBuilt deletes the binaries ExporterBinary and SimBinary built, if
// any.
func RemoveBuilt() {
	for _, b := range []*build{exporterBuild, simBuild} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
}

// Exporter is a running exporter binary with its output captured.
type Exporter struct {
	// Addr is the loopback address it listens on.
	Addr string
	Cmd  *exec.Cmd

	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

// Write captures the process's output.
func (e *Exporter) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.Write(p)
}

// Log returns everything the process has printed so far.
func (e *Exporter) Log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.String()
}

// Exited is closed once the process has exited; Cmd.ProcessState then holds
// its status.
func (e *Exporter) Exited() <-chan struct{} { return e.exited }

// StartExporter runs bin with args on a loopback listener handed to it
// (package handoff: no port is free between choosing and serving it) and
// waits until ready(addr) succeeds (15 s), failing the test if the process
// exits first. At cleanup it sends SIGTERM, and kills the process and fails
// the test if it has not exited 10 s later.
func StartExporter(t testing.TB, bin string, ready func(addr string) error, args ...string) *Exporter {
	t.Helper()
	cmd, err := handoff.Command(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	e := &Exporter{Addr: cmd.Addr, Cmd: cmd.Cmd, exited: make(chan struct{})}
	cmd.Env = append(cmd.Env, "NODE_NAME=")
	cmd.Stdout, cmd.Stderr = e, e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.Cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		_ = e.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			_ = e.Cmd.Process.Kill()
			t.Errorf("exporter did not exit within 10s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("exporter log:\n%s", e.Log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ready(e.Addr)
		if err == nil {
			return e
		}
		select {
		case <-e.exited:
			t.Fatalf("exporter exited at start:\n%s", e.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not ready within 15s: %v\nlog:\n%s", err, e.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
