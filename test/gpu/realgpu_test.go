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
	// envPtxLoad names a prebuilt ptxload binary (run.sh --build makes one).
	envPtxLoad = "KGE_PTXLOAD"
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
	t.Logf("driver %s", gpu.Driver)
	if rec, err := queryCSV(smi, "mig.mode.current"); err == nil && strings.EqualFold(rec[0], "Enabled") {
		// The MIG case: the GPU is partitioned already (the test never
		// changes that); the duty levels need a whole GPU.
		testRealMIG(t, smi, gpu)
		return
	}
	if out, err := runSMI(smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader", "-i", "0")); err == nil && strings.TrimSpace(out) != "" {
		t.Logf("WARNING: other processes use GPU 0 and will add to every reading:\n%s", out)
	}

	loadName, load := pickLoad(t, gpu.UUID)
	mps := mpsRunning()
	mpsRow := notInMode("MPS", "no MPS control daemon (CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps)")
	if mps {
		mpsRow = row{what: "MPS case", exporter: "the load runs as an MPS client", target: "its memory is in the per-process row"}
	}
	h := &harness{
		mode:         "real GPU",
		exporter:     exporterBinary(t),
		extraArgs:    []string{"--kubeconfig=" + apiKubeconfig(t)},
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
		// The load runs outside any container: all its memory is the
		// exporter's unattributed use.
		holderProcess: func(string, string) bool { return false },
		mps:           mps,
		modeRows:      []row{notInMode("MIG", "MIG is disabled on GPU 0"), mpsRow},
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
// else ptxload (prebuilt in $KGE_PTXLOAD, or built here from ptxload.c with
// gcc), which needs only the driver, else dutyload.cu built with nvcc, else
// dutyload.py with PyTorch, else with CuPy. ptxload must pass a short trial
// first: its PTX is compiled by the driver at run time, and a driver that
// refuses it leaves the others to try. The load is pinned to the GPU under
// test by UUID, since CUDA's device order need not be nvidia-smi's.
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
	var tried []string
	ptx, how := os.Getenv(envPtxLoad), "prebuilt, "+envPtxLoad
	if ptx == "" {
		if _, err := exec.LookPath("gcc"); err == nil {
			ptx, how = buildPtxLoad(t), "gcc"
		} else {
			tried = append(tried, "ptxload.c: no gcc and no "+envPtxLoad)
		}
	}
	if ptx != "" {
		out, err := pin(exec.Command(ptx, "50", "0.3", "0")).CombinedOutput()
		if err == nil && strings.Contains(string(out), "DONE") {
			return binary("ptxload.c ("+how+", driver-only PTX)", ptx)
		}
		t.Logf("ptxload trial failed, trying the other load generators: %v\n%s", err, out)
		tried = append(tried, fmt.Sprintf("ptxload (%s): %v %s", how, err, strings.TrimSpace(lastLine(string(out)))))
	}
	src := filepath.Join("load", "dutyload.cu")
	if nvcc, err := exec.LookPath("nvcc"); err == nil {
		bin := filepath.Join(t.TempDir(), "dutyload")
		if out, err := exec.Command(nvcc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
			t.Fatalf("nvcc %s: %v\n%s", src, err, out)
		}
		return binary("dutyload.cu (nvcc)", bin)
	}
	tried = append(tried, "nvcc not in PATH")
	py := os.Getenv(envPython)
	if py == "" {
		py = "python3"
	}
	script, err := filepath.Abs(filepath.Join("load", "dutyload.py"))
	if err != nil {
		t.Fatal(err)
	}
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
	t.Fatalf("no GPU load generator: set %s to a dutyload binary or %s to a ptxload binary, install gcc to build load/ptxload.c, "+
		"nvcc (CUDA toolkit) to build %s, or Python with PyTorch or CuPy (%s to choose the interpreter). Tried: %s",
		envLoad, envPtxLoad, src, envPython, strings.Join(tried, "; "))
	return "", nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
