package gpu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// The dry run checks the harness, not a GPU. The exporter serves the
// simulated node (go-nvml's mock behind the real sampler), nvidia-smi is the
// test binary reading the same simulated node's formula, and the "load" is a
// process that only prints READY: the scenario, not the load, sets the
// utilization. What it proves is that the harness starts and stops its
// processes, parses nvidia-smi's CSV, averages the same window the exporter
// averages, finds the right series, judges the targets and prints the table.

// dryScenario is one simulated GPU held by the test container. The wave is
// slow enough (at most ~1.6 points/s) that the exporter's samples on whole
// seconds and nvidia-smi's readings in between differ by well under the
// duty tolerance, and wide enough that the levels read different values.
// A process of another pod uses the GPU without holding it (the exporter's
// unattributed memory, compared with nvidia-smi's process list), and the
// GPU has memory errors behind it, so the counters compared are not all 0.
func dryScenario(memoryMiB int) string {
	return fmt.Sprintf(`node: %s
model: H100-SXM5-80GB
gpus: 1
pods:
  - namespace: %s
    name: %s
    containers:
      - name: %s
        resource: %s
        devices: ["0"]
        utilization: {mean: 50, swing: 45, period: 3m}
        memoryGiB: %g
  - namespace: other
    name: notebook-0
    containers:
      - name: notebook
        unallocatedDevices: ["0"]
        utilization: {mean: 2}
        memoryGiB: 0.75
allocatable:
  %s: ["0"]
gpuState:
  0:
    ecc: {correctedVolatile: 3, correctedAggregate: 11, uncorrectedAggregate: 1}
    remappedRows: {correctable: 2}
`, testNode, testNamespace, testPod, testContainer, testResource, float64(memoryMiB)/1024, testResource)
}

func TestDryRunHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the exporter for ~12s; skipped with -short")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const memoryMiB = 2048
	scenario := filepath.Join(t.TempDir(), "scenario.yaml")
	if err := os.WriteFile(scenario, []byte(dryScenario(memoryMiB)), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, err := simulate.Load(scenario)
	if err != nil {
		t.Fatal(err)
	}
	node, err := simulate.Start(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)

	h := &harness{
		mode:         "DRY RUN (simulated node, stand-in nvidia-smi and load: validates the harness, not a GPU)",
		exporter:     simBinary(t),
		extraArgs:    []string{"--simulate.scenario=" + scenario},
		window:       2 * time.Second,
		poll:         250 * time.Millisecond,
		settle:       200 * time.Millisecond,
		sampleEvery:  250 * time.Millisecond,
		levels:       []int{0, 25, 50, 75, 100},
		memoryMiB:    memoryMiB,
		scrapes:      50,
		smiRuns:      5,
		readyTimeout: 10 * time.Second,
		smi: func(args ...string) *exec.Cmd {
			cmd := exec.Command(self, args...)
			cmd.Env = append(os.Environ(), envFakeSMI+"="+scenario)
			return cmd
		},
		load: func(duty int, seconds float64, mib int) *exec.Cmd {
			cmd := exec.Command(self, strconv.Itoa(duty), strconv.FormatFloat(seconds, 'f', 1, 64), strconv.Itoa(mib))
			cmd.Env = append(os.Environ(), envFakeLoad+"=1")
			return cmd
		},
		loadName: "none (the scenario's wave sets the utilization)",
		// The scenario, not the level, decides the utilization: its mean
		// over the window, from the simulated node's own formula.
		intended: func(_ int, from, to time.Time) float64 {
			var sum float64
			var n int
			for at := from; !at.After(to); at = at.Add(10 * time.Millisecond) {
				sum += node.Utilization(0, at)
				n++
			}
			return sum / float64(n)
		},
		intendedNote: "the scenario's mean over each window (the level only names the step)",
		holderProcess: func(_, name string) bool {
			return name == testNamespace+"/"+testPod+"/"+testContainer
		},
		modeRows: []row{notInMode("MIG", "the scenario's GPU is not MIG-enabled"), notInMode("MPS", "no MPS control daemon")},
	}
	start := time.Now()
	rep := h.run(t)
	rep.publish(t, "gpu-validation-dry-run.md")
	t.Logf("dry run took %s", time.Since(start).Round(time.Millisecond))
	for _, f := range rep.failures() {
		t.Error(f)
	}
	if got := len(rep.Levels); got != len(h.levels) {
		t.Errorf("%d levels measured, want %d", got, len(h.levels))
	}
}

// TestReportJudgesTargets checks that the table and the assertions flag a
// miss of each target, so a real run cannot pass on a broken judge.
func TestReportJudgesTargets(t *testing.T) {
	good := levelResult{Level: 50, Intended: 50, Container: 49, Node: 49, SMI: 50, SMISamples: 10,
		MemUsedExporter: 2600, MemTotalExporter: 81559, MemUsedSMI: 2600, MemTotalSMI: 81559}
	base := report{Mode: "unit", MemoryMiB: 2048, Levels: []levelResult{good},
		ScrapeMedian: time.Millisecond, Scrapes: 50, SMIMedian: 80 * time.Millisecond, SMIRuns: 5, RSSKiB: 20480}
	if f := base.failures(); len(f) != 0 {
		t.Fatalf("good report fails: %v", f)
	}
	for name, mutate := range map[string]func(r *report){
		"container duty off": func(r *report) { r.Levels[0].Container = 46.9 },
		"node duty off":      func(r *report) { r.Levels[0].Node = 53.1 },
		"load not calibrated": func(r *report) {
			r.Levels[0].SMI, r.Levels[0].Container, r.Levels[0].Node = 61, 61, 61
		},
		"memory used off":     func(r *report) { r.Levels[0].MemUsedExporter = 2601.5 },
		"memory not held":     func(r *report) { r.Levels[0].MemUsedExporter, r.Levels[0].MemUsedSMI = 500, 500 },
		"memory total off":    func(r *report) { r.Levels[0].MemTotalExporter = 81561 },
		"scrape slower":       func(r *report) { r.ScrapeMedian = 90 * time.Millisecond },
		"worst level counted": func(r *report) { r.Levels = append(r.Levels, good); r.Levels[1].MemUsedSMI = 2590 },
	} {
		r := base
		r.Levels = append([]levelResult(nil), base.Levels...)
		mutate(&r)
		if len(r.failures()) == 0 {
			t.Errorf("%s: not flagged", name)
		}
		if !strings.Contains(r.table(), "| NO |") {
			t.Errorf("%s: table does not say NO:\n%s", name, r.table())
		}
	}
}

func TestMeanWithin(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := []smiSample{
		{at: t0.Add(-time.Second), value: 100},
		{at: t0, value: 10},
		{at: t0.Add(time.Second), value: 20},
		{at: t0.Add(1500 * time.Millisecond), err: fmt.Errorf("nvidia-smi failed")},
		{at: t0.Add(2 * time.Second), value: 30},
		{at: t0.Add(3 * time.Second), value: 100},
	}
	if m, n := meanWithin(s, t0, t0.Add(2*time.Second)); m != 20 || n != 3 {
		t.Errorf("meanWithin = %v over %d samples, want 20 over 3", m, n)
	}
}

func TestParseExposition(t *testing.T) {
	text := "# HELP x y\n# TYPE x gauge\n" +
		`containerGpuDutyCycle{container="load",gpu_id="GPU-1",namespace="a\"b",pod="p"} 42.5` + "\n" +
		`kube_gpu_exporter_up{source="nvml"} 1` + "\n" + "plain 3 1700000000000\n"
	ss, err := parseExposition(text)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := find(ss, "containerGpuDutyCycle", map[string]string{"namespace": `a"b`, "gpu_id": "GPU-1"}); err != nil || v != 42.5 {
		t.Errorf("find = %v, %v", v, err)
	}
	if v, err := find(ss, "plain", nil); err != nil || v != 3 {
		t.Errorf("plain = %v, %v", v, err)
	}
	if _, err := find(ss, "kube_gpu_exporter_up", map[string]string{"source": "kubelet"}); err == nil {
		t.Error("missing series found")
	}
	if _, err := parseExposition(`bad{a="1} 2`); err == nil {
		t.Error("unterminated label accepted")
	}
}

// TestPythonLoadGenerator runs what dutyload.py does without a GPU: its
// argument checks (the GPU libraries are imported only once a backend is
// chosen) and its duty loop, driven by a backend that sleeps instead of
// running a kernel.
func TestPythonLoadGenerator(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	for _, args := range [][]string{{"101", "5", "0"}, {"50", "0", "-1"}} {
		out, err := exec.Command(py, append([]string{filepath.Join("load", "dutyload.py")}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("dutyload.py %v: %v, want a usage error (exit 2)\n%s", args, err, out)
		}
	}
	const loop = `import sys, time
sys.path.insert(0, "load")
import dutyload
class Sleeper:
    name = "sleep"
    def busy(self, s):
        t = time.perf_counter(); time.sleep(s); return time.perf_counter() - t
dutyload.run(Sleeper(), 30, 1.0)
`
	out, err := exec.Command(py, "-c", loop).CombinedOutput()
	if err != nil {
		t.Fatalf("duty loop: %v\n%s", err, out)
	}
	var periods int
	var busy, wall, duty float64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "DONE backend=sleep periods=%d busy=%fs wall=%fs measured_duty=%f%%", &periods, &busy, &wall, &duty); err != nil {
		t.Fatalf("duty loop output %q: %v", out, err)
	}
	if periods < 9 || periods > 11 || math.Abs(duty-30) > 5 || math.Abs(wall-1) > 0.2 {
		t.Errorf("duty loop at 30%% for 1s: %d periods, %.1f%% busy over %.2fs; want 10 periods, ~30%%, ~1s", periods, duty, wall)
	}
}

// --- stand-ins, run by TestMain in a child process -----------------------------

// fakeDutyLoad takes the load generator's arguments and holds nothing: in
// the dry run the scenario sets utilization and memory.
func fakeDutyLoad(args []string, stdout, stderr io.Writer) int {
	if len(args) != 3 {
		fmt.Fprintln(stderr, "usage: DUTY SECONDS MIB")
		return 2
	}
	duty, err1 := strconv.Atoi(args[0])
	secs, err2 := strconv.ParseFloat(args[1], 64)
	mib, err3 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || err3 != nil || duty < 0 || duty > 100 || secs <= 0 || mib < 0 {
		fmt.Fprintln(stderr, "usage: DUTY(0-100) SECONDS(>0) MIB(>=0)")
		return 2
	}
	fmt.Fprintln(stdout, "READY")
	time.Sleep(time.Duration(secs * float64(time.Second)))
	fmt.Fprintln(stdout, "DONE (stand-in: no GPU work)")
	return 0
}
