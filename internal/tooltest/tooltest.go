// Package tooltest finds the outside programs that end-to-end tests drive
// (prometheus, promtool, helm, kustomize). A test that lacks one skips on a
// developer's machine but fails under CI, where .ci/run installs every tool:
// a skipped end-to-end test must never pass for a green one.
package tooltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
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
