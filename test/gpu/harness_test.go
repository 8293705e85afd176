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
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
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

// --- judging and printing ---------------------------------------------------

// row is one line of the result table with the verdict of its target.
type row struct {
	what, intended, exporter, smi, diff, target string
	ok                                          *bool // nil: reported, not judged
}

func verdict(ok bool) *bool { return &ok }

// worstMemory returns the level whose exporter memory differs most from
// nvidia-smi.
func (r *report) worstMemory() levelResult {
	var worst levelResult
	w := -1.0
	for _, l := range r.Levels {
		if d := math.Max(math.Abs(l.MemUsedExporter-l.MemUsedSMI), math.Abs(l.MemTotalExporter-l.MemTotalSMI)); d > w {
			worst, w = l, d
		}
	}
	return worst
}

// rows turns the report into the table, judging each target once so the
// table and the assertions cannot disagree.
func (r *report) rows() []row {
	var rows []row
	for _, l := range r.Levels {
		dc, dn := l.Container-l.SMI, l.Node-l.SMI
		ok := math.Abs(dc) <= dutyTolerance && math.Abs(dn) <= dutyTolerance && math.Abs(l.SMI-l.Intended) <= calibrationTolerance
		rows = append(rows, row{
			what:     fmt.Sprintf("duty cycle, %d %% level", l.Level),
			intended: fmt.Sprintf("%.1f %%", l.Intended),
			exporter: fmt.Sprintf("%.1f / %.1f %%", l.Container, l.Node),
			smi:      fmt.Sprintf("%.1f %% (%d samples)", l.SMI, l.SMISamples),
			diff:     fmt.Sprintf("%+.1f / %+.1f", dc, dn),
			target:   fmt.Sprintf("±%.0f (nvidia-smi within ±%.0f of intended)", dutyTolerance, calibrationTolerance),
			ok:       verdict(ok),
		})
	}
	if len(r.Levels) > 0 {
		w := r.worstMemory()
		rows = append(rows,
			row{
				what:     fmt.Sprintf("memory used (worst of %d levels: %d %%)", len(r.Levels), w.Level),
				intended: fmt.Sprintf("≥ %d MiB held", r.MemoryMiB),
				exporter: fmt.Sprintf("%.1f MiB", w.MemUsedExporter),
				smi:      fmt.Sprintf("%.0f MiB", w.MemUsedSMI),
				diff:     fmt.Sprintf("%+.1f", w.MemUsedExporter-w.MemUsedSMI),
				target:   fmt.Sprintf("±%.0f MiB", memoryToleranceMiB),
				ok:       verdict(math.Abs(w.MemUsedExporter-w.MemUsedSMI) <= memoryToleranceMiB && w.MemUsedSMI >= float64(r.MemoryMiB)),
			},
			row{
				what:     "memory total",
				exporter: fmt.Sprintf("%.1f MiB", w.MemTotalExporter),
				smi:      fmt.Sprintf("%.0f MiB", w.MemTotalSMI),
				diff:     fmt.Sprintf("%+.1f", w.MemTotalExporter-w.MemTotalSMI),
				target:   fmt.Sprintf("±%.0f MiB", memoryToleranceMiB),
				ok:       verdict(math.Abs(w.MemTotalExporter-w.MemTotalSMI) <= memoryToleranceMiB),
			})
	}
	rows = append(rows, r.Families...)
	rows = append(rows, r.Modes...)
	rows = append(rows,
		row{
			what:     "latency, median",
			exporter: fmt.Sprintf("%s (%d GETs of /metrics, %d bytes)", fmtDuration(r.ScrapeMedian), r.Scrapes, r.ScrapeBytes),
			smi:      fmt.Sprintf("%s (%d runs of --query-gpu=utilization.gpu,memory.used)", fmtDuration(r.SMIMedian), r.SMIRuns),
			diff:     fmt.Sprintf("%.1fx faster", float64(r.SMIMedian)/float64(max(r.ScrapeMedian, 1))),
			target:   "scrape faster than one nvidia-smi call",
			ok:       verdict(r.ScrapeMedian < r.SMIMedian),
		},
		row{
			what:     "exporter RSS (VmRSS)",
			exporter: fmt.Sprintf("%.1f MiB", float64(r.RSSKiB)/1024),
			target:   "reported",
		})
	return rows
}

// failures lists every missed target.
func (r *report) failures() []string {
	var out []string
	for _, rw := range r.rows() {
		if rw.ok != nil && !*rw.ok {
			out = append(out, fmt.Sprintf("%s: exporter %s, nvidia-smi %s, intended %s; target %s", rw.what, rw.exporter, rw.smi, rw.intended, rw.target))
		}
	}
	return out
}

// table renders the report as one Markdown table with a heading that says
// what ran.
func (r *report) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kube-gpu-exporter GPU validation: %s\n\n", r.Mode)
	fmt.Fprintf(&b, "GPU 0: %s (%s), %.0f MiB, driver %s; load: %s; window %s, poll %s", r.GPU.Name, r.GPU.UUID, r.GPU.TotalMiB, r.GPU.Driver, r.LoadName, r.Window, r.Poll)
	if r.IntendedNote != "" {
		fmt.Fprintf(&b, "; intended: %s", r.IntendedNote)
	}
	b.WriteString("\n\n")
	b.WriteString("| measurement | intended | exporter (container / node) | nvidia-smi | exporter − nvidia-smi | target | ok |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, rw := range r.rows() {
		ok := ""
		if rw.ok != nil {
			ok = map[bool]string{true: "yes", false: "NO"}[*rw.ok]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", rw.what, rw.intended, rw.exporter, rw.smi, rw.diff, rw.target, ok)
	}
	return b.String()
}

// publish prints the table and, when GPU_TEST_OUT is set, writes it there
// so a run on a remote machine can bring it back.
func (r *report) publish(t *testing.T, file string) {
	t.Helper()
	text := r.table()
	fmt.Println("\n" + text)
	if dir := os.Getenv(envOut); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("table written to %s", path)
	}
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// --- nvidia-smi ---------------------------------------------------------------

// runSMI runs an nvidia-smi command and returns its standard output.
func runSMI(cmd *exec.Cmd) (string, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s%s", strings.Join(cmd.Args, " "), err, out, stderr.Bytes())
	}
	return string(out), nil
}

// queryCSV runs an nvidia-smi query with --format=csv,noheader,nounits for
// GPU 0 and returns its one row.
func queryCSV(smi func(...string) *exec.Cmd, fields ...string) ([]string, error) {
	out, err := runSMI(smi("--query-gpu="+strings.Join(fields, ","), "--format=csv,noheader,nounits", "-i", "0"))
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(out))
	r.TrimLeadingSpace = true
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi output %q: %w", out, err)
	}
	if len(recs) != 1 || len(recs[0]) != len(fields) {
		return nil, fmt.Errorf("nvidia-smi output %q: want one row of %d fields", out, len(fields))
	}
	return recs[0], nil
}

// number parses one nvidia-smi value; "[N/A]" and "[Not Supported]" are errors.
func number(field, s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("nvidia-smi %s is %q, not a number", field, s)
	}
	return v, nil
}

func queryGPU(smi func(...string) *exec.Cmd) (gpuInfo, error) {
	rec, err := queryCSV(smi, "uuid", "name", "memory.total", "driver_version")
	if err != nil {
		return gpuInfo{}, err
	}
	total, err := number("memory.total", rec[2])
	if err != nil {
		return gpuInfo{}, err
	}
	if !strings.HasPrefix(rec[0], "GPU-") {
		return gpuInfo{}, fmt.Errorf("nvidia-smi uuid %q is not a GPU UUID", rec[0])
	}
	return gpuInfo{UUID: rec[0], Name: rec[1], TotalMiB: total, Driver: rec[3]}, nil
}

// queryMemory returns GPU 0's used and total memory in MiB.
func queryMemory(smi func(...string) *exec.Cmd) (used, total float64, err error) {
	rec, err := queryCSV(smi, "memory.used", "memory.total")
	if err != nil {
		return 0, 0, err
	}
	if used, err = number("memory.used", rec[0]); err != nil {
		return 0, 0, err
	}
	total, err = number("memory.total", rec[1])
	return used, total, err
}

// smiSample is one utilization reading, stamped at the middle of the call.
type smiSample struct {
	at    time.Time
	value float64
	err   error
}

// sampleField reads one numeric --query-gpu field of GPU 0 every interval
// until ctx ends, then sends everything it read.
func sampleField(ctx context.Context, smi func(...string) *exec.Cmd, field string, every time.Duration) <-chan []smiSample {
	out := make(chan []smiSample, 1)
	go func() {
		var got []smiSample
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			start := time.Now()
			rec, err := queryCSV(smi, field)
			s := smiSample{at: start.Add(time.Since(start) / 2), err: err}
			if err == nil {
				s.value, s.err = number(field, rec[0])
			}
			got = append(got, s)
			select {
			case <-ctx.Done():
				out <- got
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// meanWithin averages the good samples taken within [from, to], the window
// the exporter's value covers.
func meanWithin(samples []smiSample, from, to time.Time) (float64, int) {
	var sum float64
	var n int
	for _, s := range samples {
		if s.err == nil && !s.at.Before(from) && !s.at.After(to) {
			sum += s.value
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

func samplesErrors(samples []smiSample) []error {
	var errs []error
	for _, s := range samples {
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	return errs
}

// --- the fake kubelet -------------------------------------------------------

// fakeKubelet hands the GPU under test to one container, as the kubelet does
// once the device plugin has allocated it, so the exporter's real
// pod-resources client and join run unchanged.
func fakeKubelet(uuid string) *testkit.Kubelet {
	return testkit.NewKubelet(&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{
		Namespace: testNamespace, Name: testPod,
		Containers: []*podresourcesv1.ContainerResources{{
			Name:    testContainer,
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: testResource, DeviceIds: []string{uuid}}},
		}},
	}}}, &podresourcesv1.AllocatableResourcesResponse{
		Devices: []*podresourcesv1.ContainerDevices{{ResourceName: testResource, DeviceIds: []string{uuid}}},
	})
}

// startFakeKubelet serves fakeKubelet on a socket in a short private
// directory (unix socket paths are limited to ~108 bytes), checks it with the
// exporter's own client, and returns the socket.
func startFakeKubelet(t *testing.T, uuid string) string {
	t.Helper()
	_, socket := testkit.ServeKubelet(t, fakeKubelet(uuid))

	c, err := podresources.New(podresources.Config{
		Socket: socket, MaxRecvMsgSize: 4 << 20, Timeout: 5 * time.Second,
		Matcher: resource.MustMatcher(resource.DefaultAll...),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap, err := c.Read(context.Background())
	if err != nil {
		t.Fatalf("fake kubelet: %v", err)
	}
	want := podresources.ContainerDevices{Namespace: testNamespace, Pod: testPod, Container: testContainer, Resource: testResource, DeviceIDs: []string{uuid}}
	if len(snap.Containers) != 1 || fmt.Sprint(snap.Containers[0]) != fmt.Sprint(want) ||
		fmt.Sprint(snap.Allocatable[testResource]) != fmt.Sprint([]string{uuid}) {
		t.Fatalf("fake kubelet serves %+v, allocatable %v; want %+v", snap.Containers, snap.Allocatable, want)
	}
	return socket
}

// --- the exporter -------------------------------------------------------------

// exporterBinary returns $KUBE_GPU_EXPORTER_BINARY (a prebuilt exporter,
// for machines without Go) or builds the production exporter from this
// checkout: the one the real-GPU test measures.
func exporterBinary(t *testing.T) string { return tooltest.ExporterBinary(t) }

// simBinary returns $KUBE_GPU_EXPORTER_SIM_BINARY or builds
// kube-gpu-exporter-sim, which the dry run points at its simulated node.
func simBinary(t *testing.T) string { return tooltest.SimBinary(t) }

// exporter is a running exporter binary with a client for its endpoint.
type exporter struct {
	*tooltest.Exporter
	client *http.Client
}

func (e *exporter) scrape() (string, error) {
	resp, err := e.client.Get("http://" + e.Addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// startExporter runs the exporter without waiting for any readiness: the
// callers wait for the series they need.
func startExporter(t *testing.T, bin string, args ...string) *exporter {
	t.Helper()
	started := func(string) error { return nil }
	return &exporter{Exporter: tooltest.StartExporter(t, bin, started, args...), client: &http.Client{Timeout: 10 * time.Second}}
}

// waitForContainer waits until the exporter serves the test container's
// duty cycle: NVML is up, the fake kubelet was read and the join matched.
func waitForContainer(t *testing.T, e *exporter, uuid string) {
	t.Helper()
	waitForSeries(t, e, "containerGpuDutyCycle", map[string]string{"namespace": testNamespace, "pod": testPod, "container": testContainer, "gpu_id": uuid})
}

// waitForSeries waits up to 30s for the exporter to serve one series of
// name with these labels, and returns its value.
func waitForSeries(t *testing.T, e *exporter, name string, want map[string]string) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		body, err := e.scrape()
		if err == nil {
			var ss []series
			if ss, err = parseExposition(body); err == nil {
				var v float64
				if v, err = find(ss, name, want); err == nil {
					return v
				}
				nv, _ := find(ss, "kube_gpu_exporter_up", map[string]string{"source": "nvml"})
				kl, _ := find(ss, "kube_gpu_exporter_up", map[string]string{"source": "kubelet"})
				err = fmt.Errorf("%w (kube_gpu_exporter_up nvml=%v kubelet=%v)", err, nv, kl)
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("exporter does not serve %s%v within 30s: %v\nlog:\n%s", name, want, last, e.Log())
	return 0
}

// vmRSS returns a process's resident set size in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// --- the load generator process ---------------------------------------------

// loadProc is a running load generator.
type loadProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (l *loadProc) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

func (l *loadProc) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends the load and waits for it, so the next level starts on an idle
// GPU with the memory released.
func (l *loadProc) stop() {
	if !l.exited() {
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	}
}

// startLoad starts a load generator and waits for its "READY" line: the
// memory is held and the next instant is the first busy period.
func startLoad(t *testing.T, cmd *exec.Cmd, timeout time.Duration) *loadProc {
	t.Helper()
	l := &loadProc{cmd: cmd, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = lockedWriter{&l.mu, &l.out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start load generator %s: %v", strings.Join(cmd.Args, " "), err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			l.mu.Lock()
			l.out.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			if !signalled && strings.TrimSpace(sc.Text()) == "READY" {
				close(ready)
				signalled = true
			}
		}
		_ = cmd.Wait()
		close(l.done)
	}()
	select {
	case <-ready:
	case <-l.done:
		t.Fatalf("load generator %s exited before READY:\n%s", strings.Join(cmd.Args, " "), l.output())
	case <-time.After(timeout):
		l.stop()
		t.Fatalf("load generator %s not READY within %s:\n%s", strings.Join(cmd.Args, " "), timeout, l.output())
	}
	t.Cleanup(l.stop)
	return l
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// --- the exposition format ----------------------------------------------------

// series is one sample of the text exposition format.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition reads the samples of a Prometheus text exposition.
func parseExposition(text string) ([]series, error) {
	var out []series
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("exposition line %d %q: %w", n+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSample(line string) (series, error) {
	s := series{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, errors.New("no metric name")
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " ,")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.Index(line, `="`)
			if eq <= 0 {
				return s, errors.New("malformed label")
			}
			key := line[:eq]
			line = line[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(line); j++ {
				c := line[j]
				if c == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(line[j])
					}
					continue
				}
				if c == '"' {
					line, closed = line[j+1:], true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	f := strings.Fields(line)
	if len(f) < 1 || len(f) > 2 {
		return s, errors.New("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// find returns the value of the one series of name whose labels include want.
func find(ss []series, name string, want map[string]string) (float64, error) {
	var hits []series
	for _, s := range ss {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			hits = append(hits, s)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0].value, nil
	case 0:
		return 0, fmt.Errorf("no %s series with labels %v", name, want)
	default:
		return 0, fmt.Errorf("%d %s series with labels %v, want one", len(hits), name, want)
	}
}
