package gpu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ptxload.c is the load generator for machines with only the NVIDIA driver.
// These tests run it without a GPU against fakecuda.c, a stand-in for
// libcuda.so.1 whose kernels take the time they are asked to, so its argument
// checks, its driver calls and error paths, and its duty loop are all
// exercised on every test run.

// ptxLoadCFlags are the compiler flags the headers of ptxload.c and
// fakecuda.c give.
var ptxLoadCFlags = []string{"-O2", "-std=c11", "-Wall", "-Wextra"}

// requireGCC returns the C compiler, or ends the test: a skip on a developer's
// machine, a failure under CI, which must have one.
func requireGCC(t testing.TB) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("gcc not found: CI must install it to build load/ptxload.c")
		}
		t.Skip("gcc not found: install it to build load/ptxload.c")
	}
	return gcc
}

// compileC runs gcc with args and returns what it printed: its warnings.
func compileC(t testing.TB, args ...string) (warnings string) {
	t.Helper()
	out, err := exec.Command(requireGCC(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildPtxLoad builds load/ptxload.c into a temporary directory with the
// command its header gives and returns the binary. It needs only gcc; the
// driver is opened when the binary runs. Warnings are logged, not failed on,
// so that a newer compiler's new warning cannot stop a real-GPU run;
// TestPtxLoad fails on them.
func buildPtxLoad(t testing.TB) (bin string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "ptxload")
	args := append(append([]string(nil), ptxLoadCFlags...), "-o", bin, filepath.Join("load", "ptxload.c"), "-ldl")
	if warnings := compileC(t, args...); warnings != "" {
		t.Logf("gcc warnings for ptxload.c:\n%s", warnings)
	}
	return bin
}

// buildFakeCUDA builds load/fakecuda.c, the tests' stand-in for the driver,
// and returns the library for ptxload's KGE_LIBCUDA.
func buildFakeCUDA(t testing.TB) (lib string) {
	t.Helper()
	lib = filepath.Join(t.TempDir(), "libcuda.so.1")
	args := append(append([]string(nil), ptxLoadCFlags...), "-shared", "-fPIC", "-o", lib, filepath.Join("load", "fakecuda.c"))
	if warnings := compileC(t, args...); warnings != "" {
		t.Logf("gcc warnings for fakecuda.c:\n%s", warnings)
	}
	return lib
}

// ptxLoadCmd is ptxload with args and exactly the given KGE_LIBCUDA and
// FAKECUDA_* settings, whatever the test process's own environment holds.
func ptxLoadCmd(ctx context.Context, bin string, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KGE_LIBCUDA=") && !strings.HasPrefix(kv, "FAKECUDA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// runPtxLoad runs ptxload to the end and returns its output and exit status.
func runPtxLoad(t *testing.T, bin string, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := ptxLoadCmd(ctx, bin, env, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("ptxload %v: %v\n%s", args, err, errOut.String())
	}
	return out.String(), errOut.String(), code
}

// TestPtxLoad builds ptxload and the stand-in driver once for its parts.
func TestPtxLoad(t *testing.T) {
	bin, lib := buildPtxLoad(t), buildFakeCUDA(t)
	t.Run("CompilesClean", testPtxLoadCompilesClean)
	t.Run("Usage", func(t *testing.T) { testPtxLoadUsage(t, bin) })
	t.Run("NoDriver", func(t *testing.T) { testPtxLoadNoDriver(t, bin) })
	t.Run("DutyLoop", func(t *testing.T) { testPtxLoadDutyLoop(t, bin, lib) })
	t.Run("CUDAError", func(t *testing.T) { testPtxLoadCUDAError(t, bin, lib) })
}

// testPtxLoadCompilesClean holds both sources to the promise of their
// headers: no warnings with the documented flags. It compiles rather than
// only parses, because some warnings come from the optimiser.
func testPtxLoadCompilesClean(t *testing.T) {
	for _, src := range []string{"ptxload.c", "fakecuda.c"} {
		args := append(append([]string(nil), ptxLoadCFlags...), "-c", "-fPIC", "-o", os.DevNull, filepath.Join("load", src))
		if warnings := compileC(t, args...); warnings != "" {
			t.Errorf("gcc warned about %s:\n%s", src, warnings)
		}
	}
}

// testPtxLoadUsage: bad arguments are refused with exit status 2 before the
// driver is opened. The driver path leads nowhere, so an argument that slipped
// through would show as exit status 3 rather than run anything.
func testPtxLoadUsage(t *testing.T, bin string) {
	env := map[string]string{"KGE_LIBCUDA": filepath.Join(t.TempDir(), "absent", "libcuda.so.1")}
	for _, args := range [][]string{
		{"101", "5", "0"}, {"-1", "5", "0"}, {"50", "0", "0"}, {"50", "-2", "0"}, {"50", "nan", "0"},
		{"50", "1", "-1"}, {"x", "1", "1"}, {"50", "1s", "1"}, {"50", "1", "1.5"}, {"", "1", "1"},
		{"50", "1"}, {"50", "1", "1", "1"}, {},
	} {
		stdout, stderr, code := runPtxLoad(t, bin, env, args...)
		if code != 2 || !strings.Contains(stderr, "usage: ptxload DUTY(0-100) SECONDS(>0) MIB(>=0)") || stdout != "" {
			t.Errorf("ptxload %q: exit %d, stdout %q, stderr %q; want a usage error (exit 2)", args, code, stdout, stderr)
		}
	}
}

// testPtxLoadNoDriver: without a usable libcuda.so.1 the message says what is
// missing and that the driver is needed, with exit status 3.
func testPtxLoadNoDriver(t *testing.T, bin string) {
	dir := t.TempDir()
	absent := filepath.Join(dir, "absent", "libcuda.so.1")
	// A library that opens but is not the driver.
	src := filepath.Join(dir, "other.c")
	if err := os.WriteFile(src, []byte("int not_cuda;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "libother.so")
	compileC(t, "-shared", "-fPIC", "-o", other, src)

	for _, c := range []struct {
		lib  string
		want []string
	}{
		{absent, []string{"cannot open " + absent, "NVIDIA driver is needed"}},
		{other, []string{other + " has no symbol cuInit", "NVIDIA driver is needed"}},
	} {
		stdout, stderr, code := runPtxLoad(t, bin, map[string]string{"KGE_LIBCUDA": c.lib}, "30", "1", "16")
		if code != 3 || stdout != "" {
			t.Errorf("KGE_LIBCUDA=%s: exit %d, stdout %q, stderr %q; want exit 3", c.lib, code, stdout, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("KGE_LIBCUDA=%s: stderr %q does not say %q", c.lib, stderr, w)
			}
		}
	}
}

// testPtxLoadDutyLoop runs the duty loop against the stand-in driver, whose
// kernels last as long as asked: 30% for 1 s must be ten periods of 30 ms on
// the "GPU", measured by its events, after READY has promised that the
// memory is held and the kernel loaded.
func testPtxLoadDutyLoop(t *testing.T, bin, lib string) {
	callLog := filepath.Join(t.TempDir(), "calls")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := ptxLoadCmd(ctx, bin, map[string]string{"KGE_LIBCUDA": lib, "FAKECUDA_LOG": callLog}, "30", "1.0", "16")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "READY" {
		_ = cmd.Wait()
		t.Fatalf("first line %q, want READY; stderr:\n%s", lines.Text(), stderr.String())
	}
	// What had to happen before READY, by then: the memory allocated and
	// zeroed, the kernel loaded and run once.
	const setup = "cuMemAlloc_v2 bytes=16777216\ncuMemsetD8_v2 offset=0 bytes=16777216 value=0\ncuLaunchKernel ns=1000\n"
	if atReady, err := os.ReadFile(callLog); err != nil || !strings.HasPrefix(string(atReady), setup) {
		t.Errorf("calls before READY (%v):\n%s\nwant them to start with\n%s", err, atReady, setup)
	}
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ptxload: %v\nstderr:\n%s", err, stderr.String())
	}
	if len(rest) != 1 {
		t.Fatalf("stdout after READY %q, want one DONE line", rest)
	}
	var periods int
	var busy, wall, duty float64
	if _, err := fmt.Sscanf(rest[0], "DONE periods=%d busy=%fs wall=%fs measured_duty=%f%%", &periods, &busy, &wall, &duty); err != nil {
		t.Fatalf("DONE line %q: %v", rest[0], err)
	}
	if periods < 9 || periods > 11 || math.Abs(duty-30) > 5 || math.Abs(wall-1) > 0.2 {
		t.Errorf("duty loop at 30%% for 1s: %d periods, %.1f%% busy over %.2fs; want 10 periods, ~30%%, ~1s", periods, duty, wall)
	}
	if want := "ptxload: fakecuda GPU, duty 30%, 1.0s, holding 16 MiB\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}

	// Every period launched one 30 ms kernel, and the memory was given back.
	calls, err := os.ReadFile(callLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := setup + strings.Repeat("cuLaunchKernel ns=30000000\n", periods) + "cuMemFree_v2 bytes=16777216\n"; string(calls) != want {
		t.Errorf("calls:\n%s\nwant\n%s", calls, want)
	}
}

// testPtxLoadCUDAError: a failing driver call ends ptxload with exit status 1
// and a message naming the call, the driver's error string and its number.
func testPtxLoadCUDAError(t *testing.T, bin, lib string) {
	for _, c := range []struct {
		fail      string
		want      []string
		wantReady bool
	}{
		{"cuMemAlloc_v2", []string{"ptxload: cuMemAlloc_v2: out of memory (CUresult 2)\n"}, false},
		{"cuCtxCreate_v2:3", []string{"ptxload: cuCtxCreate_v2: initialization error (CUresult 3)\n"}, false},
		// The JIT's log says why the PTX was refused; it comes first.
		{"cuModuleLoadDataEx:218", []string{
			"ptxload: PTX JIT log:\nfakecuda: cuModuleLoadDataEx failed as FAKECUDA_FAIL asks\n",
			": a PTX JIT compilation failed (CUresult 218)\n",
		}, false},
		// An error number the driver has no string for is still reported.
		{"cuLaunchKernel:9999", []string{"ptxload: cuLaunchKernel: unknown error (CUresult 9999)\n"}, false},
		// A failure in the duty loop comes after READY.
		{"cuEventSynchronize:700", []string{"ptxload: cuEventSynchronize (spin kernel): unknown error (CUresult 700)\n"}, true},
	} {
		env := map[string]string{"KGE_LIBCUDA": lib, "FAKECUDA_FAIL": c.fail}
		stdout, stderr, code := runPtxLoad(t, bin, env, "30", "1", "16")
		if code != 1 {
			t.Errorf("FAKECUDA_FAIL=%s: exit %d, want 1; stderr:\n%s", c.fail, code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("FAKECUDA_FAIL=%s: stderr %q does not say %q", c.fail, stderr, w)
			}
		}
		if ready := strings.Contains(stdout, "READY"); ready != c.wantReady || strings.Contains(stdout, "DONE") {
			t.Errorf("FAKECUDA_FAIL=%s: stdout %q; want READY %v and no DONE", c.fail, stdout, c.wantReady)
		}
	}
}
