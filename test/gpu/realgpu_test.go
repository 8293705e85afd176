//go:build gpu

package gpu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment variables of the real run.
const (
	// envLoad names a prebuilt dutyload binary (run.sh builds one with nvcc).
	envLoad = "KGE_DUTYLOAD"
	// envPython names the Python interpreter for dutyload.py.
	envPython = "KGE_PYTHON"
)

// TestRealGPU validates the exporter against the real driver on GPU 0. With
// the gpu build tag the user asked for a GPU run, so a missing driver, tool
// or load generator fails the test instead of skipping it. It never changes
// a GPU setting: only reads (nvidia-smi --query-gpu) and ordinary CUDA work.
func TestRealGPU(t *testing.T) {
	smiPath, err := exec.LookPath("nvidia-smi")
	if err != nil {
		t.Fatal("nvidia-smi not found in PATH: this test needs an NVIDIA GPU with its driver installed " +
			"(the dry run of the harness needs none: go test ./test/gpu -run TestDryRunHarness)")
	}
	if lib := findNVML(); lib == "" {
		t.Fatal("libnvidia-ml.so.1 not found (ldconfig -p, LD_LIBRARY_PATH, /usr/lib*): the exporter reads the GPU through it")
	} else {
		t.Logf("NVML: %s", lib)
	}
	smi := func(args ...string) *exec.Cmd { return exec.Command(smiPath, args...) }

	gpu, err := queryGPU(smi)
	if err != nil {
		t.Fatalf("nvidia-smi cannot read GPU 0: %v", err)
	}
	if rec, err := queryCSV(smi, "mig.mode.current"); err == nil && strings.EqualFold(rec[0], "Enabled") {
		t.Fatal("MIG is enabled on GPU 0: NVML reports no utilization for a MIG-enabled GPU; run on a GPU without MIG (this test changes no GPU settings)")
	}
	if out, err := runSMI(smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader", "-i", "0")); err == nil && strings.TrimSpace(out) != "" {
		t.Logf("WARNING: other processes use GPU 0 and will add to every reading:\n%s", out)
	}

	loadName, load := pickLoad(t, gpu.UUID)
	h := &harness{
		mode:         "real GPU",
		exporter:     exporterBinary(t),
		window:       10 * time.Second,
		poll:         time.Second,
		settle:       4 * time.Second,
		sampleEvery:  time.Second,
		levels:       []int{0, 25, 50, 75, 100},
		memoryMiB:    2048,
		scrapes:      50,
		smiRuns:      5,
		readyTimeout: 90 * time.Second, // importing PyTorch and creating a context can be slow
		smi:          smi,
		load:         load,
		loadName:     loadName,
		intended:     func(level int, _, _ time.Time) float64 { return float64(level) },
	}
	rep := h.run(t)
	rep.publish(t, "gpu-validation-real.md")
	for _, f := range rep.failures() {
		t.Error(f)
	}
}

// findNVML returns where libnvidia-ml.so.1 is, or "".
func findNVML() string {
	if out, err := exec.Command("ldconfig", "-p").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "libnvidia-ml.so.1") {
				if _, path, ok := strings.Cut(line, "=> "); ok {
					return strings.TrimSpace(path)
				}
			}
		}
	}
	dirs := filepath.SplitList(os.Getenv("LD_LIBRARY_PATH"))
	dirs = append(dirs, "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
		"/usr/local/nvidia/lib64", "/usr/local/cuda/lib64", "/usr/lib/wsl/lib")
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, "libnvidia-ml.so.1")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// pickLoad chooses the load generator: a prebuilt dutyload ($KGE_DUTYLOAD),
// else dutyload.cu built with nvcc, else dutyload.py with PyTorch, else with
// CuPy. The load is pinned to the GPU under test by UUID, since CUDA's device
// order need not be nvidia-smi's.
func pickLoad(t *testing.T, uuid string) (string, func(duty int, seconds float64, mib int) *exec.Cmd) {
	t.Helper()
	args := func(duty int, seconds float64, mib int) []string {
		return []string{strconv.Itoa(duty), strconv.FormatFloat(seconds, 'f', 1, 64), strconv.Itoa(mib)}
	}
	pin := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES="+uuid)
		return cmd
	}
	binary := func(name, bin string) (string, func(int, float64, int) *exec.Cmd) {
		return name, func(duty int, seconds float64, mib int) *exec.Cmd {
			return pin(exec.Command(bin, args(duty, seconds, mib)...))
		}
	}
	if bin := os.Getenv(envLoad); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%s: %v", envLoad, err)
		}
		return binary("dutyload.cu (prebuilt, "+envLoad+")", abs)
	}
	src := filepath.Join("load", "dutyload.cu")
	if nvcc, err := exec.LookPath("nvcc"); err == nil {
		bin := filepath.Join(t.TempDir(), "dutyload")
		if out, err := exec.Command(nvcc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
			t.Fatalf("nvcc %s: %v\n%s", src, err, out)
		}
		return binary("dutyload.cu (nvcc)", bin)
	}
	py := os.Getenv(envPython)
	if py == "" {
		py = "python3"
	}
	script, err := filepath.Abs(filepath.Join("load", "dutyload.py"))
	if err != nil {
		t.Fatal(err)
	}
	var tried []string
	for _, b := range []struct{ backend, probe string }{
		{"torch", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"},
		{"cupy", "import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)"},
	} {
		out, err := pin(exec.Command(py, "-c", b.probe)).CombinedOutput()
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s with %s: %v %s", py, b.backend, err, strings.TrimSpace(lastLine(string(out)))))
			continue
		}
		backend := b.backend
		return fmt.Sprintf("dutyload.py (%s)", backend), func(duty int, seconds float64, mib int) *exec.Cmd {
			return pin(exec.Command(py, append([]string{script, "--backend", backend}, args(duty, seconds, mib)...)...))
		}
	}
	t.Fatalf("no GPU load generator: set %s to a dutyload binary, install nvcc (CUDA toolkit) to build %s, "+
		"or Python with PyTorch or CuPy (%s to choose the interpreter). Tried: nvcc not in PATH; %s",
		envLoad, src, envPython, strings.Join(tried, "; "))
	return "", nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
