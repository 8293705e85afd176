// Package gpu validates the exporter end to end against a real NVIDIA GPU:
// a calibrated load keeps the GPU busy for a known share of every 100 ms, and
// the exporter's duty cycle and memory are compared with the intended load
// and with nvidia-smi, the tool operators already trust.
//
// The real run (TestRealGPU) is behind the gpu build tag so `go test ./...`
// never needs a GPU. The same harness also runs in TestDryRunHarness against
// the simulated node, so the code that drives the load, samples nvidia-smi,
// averages windows, scrapes, compares and prints the table is exercised on
// every test run, not only on the rare machine with a GPU.
package gpu

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// The pod the fake kubelet hands the GPU to.
const (
	testNode      = "gpu-test-node"
	testNamespace = "gpu-test"
	testPod       = "load-0"
	testContainer = "load"
	testResource  = "nvidia.com/gpu"
)

// Targets. dutyTolerance and memoryToleranceMiB are what the exporter must
// meet against nvidia-smi. calibrationTolerance only guards the load
// generator: when nvidia-smi itself is far from the intended duty, the load
// did not do what it was asked and the comparison would prove nothing.
const (
	dutyTolerance        = 3.0
	calibrationTolerance = 10.0
	memoryToleranceMiB   = 1.0
)

// Environment variables the test reads.
const (
	// envOut is a directory the result table is also written to.
	envOut = "GPU_TEST_OUT"
	// envFakeSMI and envFakeLoad turn the test binary into the dry run's
	// stand-ins for nvidia-smi and the load generator.
	envFakeSMI  = "KGE_FAKE_NVIDIA_SMI"
	envFakeLoad = "KGE_FAKE_DUTYLOAD"
)

// TestMain lets the test binary stand in for nvidia-smi and the load
// generator in the dry run: the harness then starts real processes and parses
// real command output in both modes.
func TestMain(m *testing.M) {
	if scenario := os.Getenv(envFakeSMI); scenario != "" {
		os.Exit(fakeNvidiaSMI(scenario, os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Getenv(envFakeLoad) != "" {
		os.Exit(fakeDutyLoad(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	tooltest.RemoveBuilt()
	os.Exit(code)
}

// harness is one validation run: the exporter, the load, nvidia-smi and the
// settings that size the run.
type harness struct {
	// mode heads the result table ("real GPU", "DRY RUN ...").
	mode string
	// exporter is the exporter binary; extraArgs are added to its flags.
	exporter  string
	extraArgs []string
	// window and poll are the exporter's duty-cycle window and poll interval.
	window, poll time.Duration
	// settle is how long each level runs before the compared window opens,
	// so the window holds no sample of the previous level.
	settle time.Duration
	// sampleEvery is how often nvidia-smi is sampled during a level.
	sampleEvery time.Duration
	// levels are the intended duty cycles in percent.
	levels []int
	// memoryMiB is what the load holds on the GPU at every level.
	memoryMiB int
	// scrapes and smiRuns size the latency comparison.
	scrapes, smiRuns int
	// readyTimeout bounds the load's start (CUDA context, allocation).
	readyTimeout time.Duration

	// smi returns an nvidia-smi command with these arguments.
	smi func(args ...string) *exec.Cmd
	// load returns the load generator's command for one level.
	load func(duty int, seconds float64, mib int) *exec.Cmd
	// loadName says which load generator ran, for the table.
	loadName string
	// intended is the duty cycle the load was meant to produce over
	// [from, to]: the level itself on a GPU, the scenario's mean in the dry run.
	intended func(level int, from, to time.Time) float64
	// intendedNote qualifies the intended column in the table.
	intendedNote string
	// holderProcess says whether a process nvidia-smi lists is the test
	// container's: none on a GPU (the load runs outside any container), the
	// scenario's process in the dry run.
	holderProcess func(pid, name string) bool
	// mps is set when the load runs as an MPS client; mig when GPU 0 is
	// partitioned (processes and GPM are then per instance, not compared
	// on the parent).
	mps, mig bool
	// modeRows say which GPU modes (MIG, MPS) this run covered.
	modeRows []row
}

// gpuInfo is what nvidia-smi says about GPU 0.
type gpuInfo struct {
	UUID, Name, Driver string
	TotalMiB           float64
}

// levelResult is one duty level's measurements, all over the same window.
type levelResult struct {
	Level      int
	Intended   float64
	Container  float64
	Node       float64
	SMI        float64
	SMISamples int
	// Memory in MiB: the exporter's container series and nvidia-smi, read
	// back to back while the load holds its allocation.
	MemUsedExporter, MemTotalExporter float64
	MemUsedSMI, MemTotalSMI           float64
}

// report is everything one run measured; it prints itself as the table and
// judges itself against the targets.
type report struct {
	Mode, LoadName, IntendedNote string
	GPU                          gpuInfo
	Window, Poll                 time.Duration
	MemoryMiB                    int
	Levels                       []levelResult
	ScrapeMedian                 time.Duration
	Scrapes, ScrapeBytes         int
	SMIMedian                    time.Duration
	SMIRuns                      int
	RSSKiB                       int64
	// Families compares every other family with nvidia-smi; Modes says
	// which GPU modes the run covered.
	Families, Modes []row
}

// run drives the whole validation and returns its report. It fails the test
// only for harness errors; the targets are judged by report.check.
func (h *harness) run(t *testing.T) *report {
	t.Helper()
	gpu, err := queryGPU(h.smi)
	if err != nil {
		t.Fatalf("reading GPU 0 from nvidia-smi: %v", err)
	}
	t.Logf("GPU 0: %s %s, %.0f MiB", gpu.Name, gpu.UUID, gpu.TotalMiB)

	socket := startFakeKubelet(t, gpu.UUID)
	e := startExporter(t, h.exporter, append([]string{
		"--kube.node-name=" + testNode,
		"--kubelet.pod-resources-socket=" + socket,
		"--nvml.duty-cycle-window=" + h.window.String(),
		"--nvml.poll-interval=" + h.poll.String(),
	}, h.extraArgs...)...)
	waitForContainer(t, e, gpu.UUID)

	rep := &report{
		Mode: h.mode, LoadName: h.loadName, IntendedNote: h.intendedNote, GPU: gpu,
		Window: h.window, Poll: h.poll, MemoryMiB: h.memoryMiB,
	}
	fam := h.startFamilies(t, e)
	for _, level := range h.levels {
		rep.Levels = append(rep.Levels, h.runLevel(t, e, gpu.UUID, level))
	}
	rep.Families = h.checkFamilies(t, e, gpu.UUID, fam)
	rep.Modes = h.modeRows
	h.measureLatency(t, e, rep)
	return rep
}

// runLevel holds one duty level for settle+window and measures it.
func (h *harness) runLevel(t *testing.T, e *exporter, uuid string, level int) levelResult {
	t.Helper()
	seconds := (h.settle + h.window + 2*time.Second).Seconds()
	l := startLoad(t, h.load(level, seconds, h.memoryMiB), h.readyTimeout)
	defer l.stop()
	start := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	samples := sampleField(ctx, h.smi, "utilization.gpu", h.sampleEvery)
	time.Sleep(time.Until(start.Add(h.settle + h.window)))

	at := time.Now()
	body, err := e.scrape()
	if err != nil {
		cancel()
		t.Fatalf("level %d%%: scrape: %v", level, err)
	}
	memUsed, memTotal, memErr := queryMemory(h.smi)
	cancel()
	got := <-samples
	if l.exited() {
		t.Fatalf("level %d%%: the load generator exited before the level ended:\n%s", level, l.output())
	}
	if memErr != nil {
		t.Fatalf("level %d%%: nvidia-smi memory: %v", level, memErr)
	}

	r := levelResult{Level: level, Intended: h.intended(level, at.Add(-h.window), at), MemUsedSMI: memUsed, MemTotalSMI: memTotal}
	r.SMI, r.SMISamples = meanWithin(got, at.Add(-h.window), at)
	if r.SMISamples == 0 {
		t.Fatalf("level %d%%: no nvidia-smi sample in the window (errors: %v)", level, samplesErrors(got))
	}
	series, err := parseExposition(body)
	if err != nil {
		t.Fatalf("level %d%%: %v", level, err)
	}
	cont := map[string]string{"namespace": testNamespace, "pod": testPod, "container": testContainer, "gpu_id": uuid, "node": testNode}
	node := map[string]string{"gpu_id": uuid, "node": testNode}
	for _, m := range []struct {
		name   string
		labels map[string]string
		dst    *float64
		scale  float64
	}{
		{"containerGpuDutyCycle", cont, &r.Container, 1},
		{"nodeGpuDutyCycle", node, &r.Node, 1},
		{"containerGpumemoryUsedBytes", cont, &r.MemUsedExporter, 1 << 20},
		{"containerGpumemoryTotalBytes", cont, &r.MemTotalExporter, 1 << 20},
	} {
		v, err := find(series, m.name, m.labels)
		if err != nil {
			t.Fatalf("level %d%%: %v", level, err)
		}
		*m.dst = v / m.scale
	}
	t.Logf("level %3d%%: intended %.1f, exporter container %.1f node %.1f, nvidia-smi %.1f (%d samples); memory exporter %.1f MiB, nvidia-smi %.0f MiB",
		level, r.Intended, r.Container, r.Node, r.SMI, r.SMISamples, r.MemUsedExporter, r.MemUsedSMI)
	return r
}

// measureLatency compares what one scrape of the exporter costs with what
// one nvidia-smi call costs: nvidia-smi-based exporters run one per scrape.
func (h *harness) measureLatency(t *testing.T, e *exporter, rep *report) {
	t.Helper()
	body, err := e.scrape() // warm the connection, as Prometheus keeps it open
	if err != nil {
		t.Fatal(err)
	}
	rep.ScrapeBytes = len(body)
	var scrapes []time.Duration
	for i := 0; i < h.scrapes; i++ {
		start := time.Now()
		if _, err := e.scrape(); err != nil {
			t.Fatal(err)
		}
		scrapes = append(scrapes, time.Since(start))
	}
	var calls []time.Duration
	for i := 0; i < h.smiRuns; i++ {
		start := time.Now()
		if _, err := runSMI(h.smi("--query-gpu=utilization.gpu,memory.used", "--format=csv")); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, time.Since(start))
	}
	rep.Scrapes, rep.ScrapeMedian = len(scrapes), median(scrapes)
	rep.SMIRuns, rep.SMIMedian = len(calls), median(calls)
	rss, err := vmRSS(e.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	rep.RSSKiB = rss
}
