package gpu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// energyTolerance bounds the exporter's energy over the check against the
// integral of nvidia-smi's power readings over the same time.
const energyTolerance = 0.05

// gpmMetrics are the GPM metric IDs nvidia-smi dmon reads (nvml.h,
// nvmlGpmMetricId_t) and the exporter's family for each.
var gpmMetrics = []struct {
	id     int
	name   string
	metric string
}{
	{2, "SM active", "kube_gpu_sm_active_ratio"},
	{3, "SM occupancy", "kube_gpu_sm_occupancy_ratio"},
	{5, "tensor active", "kube_gpu_tensor_active_ratio"},
	{10, "DRAM active", "kube_gpu_dram_active_ratio"},
}

// famRun is what the family check set up before the duty levels: the
// nvidia-smi fields it reads, and the power readings and first energy
// reading of the energy comparison, which spans the whole run.
type famRun struct {
	checks  []famCheck
	chosen  []string
	unknown map[int]string
	power   <-chan []smiSample
	stop    context.CancelFunc
	start   []series
	t0      time.Time
}

// startFamilies chooses the nvidia-smi fields and starts reading power.
func (h *harness) startFamilies(t *testing.T, e *exporter) *famRun {
	t.Helper()
	f := &famRun{checks: famChecks(h.poll)}
	candidates := make([][]string, 0, len(f.checks)+1)
	for _, c := range f.checks {
		candidates = append(candidates, c.fields)
	}
	candidates = append(candidates, clockEventFields)
	f.chosen, f.unknown = chooseFields(h.smi, candidates)
	if f.chosen[0] == "" {
		t.Fatal("nvidia-smi knows no power.draw field")
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.power, f.stop = sampleField(ctx, h.smi, f.chosen[0], h.sampleEvery), cancel
	t.Cleanup(cancel)
	time.Sleep(2 * h.sampleEvery) // a power reading before the first energy reading
	body, err := e.scrape()
	if err != nil {
		t.Fatalf("families: scrape: %v", err)
	}
	f.t0 = time.Now()
	if f.start, err = parseExposition(body); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkFamilies compares every family with nvidia-smi while a full-duty
// load holds memory on the GPU, and returns the rows of the table.
func (h *harness) checkFamilies(t *testing.T, e *exporter, uuid string, f *famRun) []row {
	t.Helper()
	checks, chosen, unknown := f.checks, f.chosen, f.unknown
	// The load runs until stopped; its length only bounds a stuck run.
	l := startLoad(t, h.load(100, (4*(h.settle+h.window)+time.Minute).Seconds(), h.memoryMiB), h.readyTimeout)
	defer l.stop()
	time.Sleep(h.settle + 2*h.poll)

	var dmonWait func() ([]dmonSample, error)
	if !h.mig {
		// Enough one-second samples to outlast the scrape below.
		dmonWait = startDmon(h.smi, 5)
	}
	replaysBefore, replaysErr := pcieReplays(h.smi)
	before, err := snapshot(h.smi, chosen)
	if err != nil {
		t.Fatalf("families: nvidia-smi: %v", err)
	}
	time.Sleep(h.poll) // the exporter's next poll is after the first reading
	body, err := e.scrape()
	t1 := time.Now()
	if err != nil {
		t.Fatalf("families: scrape: %v", err)
	}
	after, err := snapshot(h.smi, chosen)
	if err != nil {
		t.Fatalf("families: nvidia-smi: %v", err)
	}
	time.Sleep(2 * h.sampleEvery) // a power reading after the last energy reading
	f.stop()
	replaysAfter, _ := pcieReplays(h.smi)
	var apps []app
	var gpm map[int]float64
	var appsErr, gpmErr error
	if !h.mig {
		apps, appsErr = computeApps(h.smi, uuid)
		var samples []dmonSample
		if samples, gpmErr = dmonWait(); gpmErr == nil {
			gpm = dmonAt(samples, t1)
		}
	}
	if l.exited() {
		t.Fatalf("families: the load generator exited early:\n%s", l.output())
	}
	ss, err := parseExposition(body)
	if err != nil {
		t.Fatal(err)
	}
	ss0, t0 := f.start, f.t0

	var rows []row
	for i, c := range checks {
		if name, ok := unknown[i]; ok {
			rows = append(rows, row{what: c.what, smi: "no field " + name + " in this nvidia-smi", target: "reported, not judged"})
			continue
		}
		rows = append(rows, judgeScalar(c, chosen[i], before[chosen[i]], after[chosen[i]], ss, uuid))
	}
	if ce := chosen[len(checks)]; ce != "" {
		rows = append(rows, judgeClockEvents(before[ce], after[ce], ss, uuid))
	}
	rows = append(rows,
		judgeEnergy(ss0, ss, uuid, <-f.power, t0, t1),
		judgePCIeReplays(ss, uuid, replaysBefore, replaysAfter, replaysErr),
	)
	if h.mig {
		rows = append(rows, row{what: "per-process memory and GPM", exporter: "per MIG instance", target: "not compared on the parent"})
	} else {
		rows = append(rows, judgeProcessMemory(ss, uuid, apps, appsErr, h.holderProcess, h.mps))
		rows = append(rows, judgeGPM(ss, uuid, gpm, gpmErr)...)
	}
	rows = append(rows, judgeHealth(ss, uuid)...)
	return rows
}

// integrate is the trapezoid integral of the samples over [from, to], in
// joules, holding the first and last reading out to the ends.
func integrate(s []smiSample, from, to time.Time) (float64, int) {
	var in []smiSample
	for _, p := range s {
		if p.err == nil && !p.at.Before(from) && !p.at.After(to) {
			in = append(in, p)
		}
	}
	if len(in) < 2 {
		return 0, len(in)
	}
	j := in[0].value*in[0].at.Sub(from).Seconds() + in[len(in)-1].value*to.Sub(in[len(in)-1].at).Seconds()
	for i := 1; i < len(in); i++ {
		j += (in[i].value + in[i-1].value) / 2 * in[i].at.Sub(in[i-1].at).Seconds()
	}
	return j, len(in)
}

func judgeEnergy(ss0, ss []series, uuid string, power []smiSample, from, to time.Time) row {
	r := row{what: "energy over the check (J)", target: fmt.Sprintf("±%.0f %% of ∫ power", energyTolerance*100)}
	labels := map[string]string{"gpu_id": uuid}
	e0, err0 := find(ss0, "kube_gpu_energy_joules_total", labels)
	e1, err1 := find(ss, "kube_gpu_energy_joules_total", labels)
	want, n := integrate(power, from, to)
	r.smi = fmt.Sprintf("%.1f (∫ of %d power readings over %.1fs)", want, n, to.Sub(from).Seconds())
	if err0 != nil || err1 != nil {
		r.exporter = "absent"
		r.ok = verdict(false)
		return r
	}
	got := e1 - e0
	r.exporter = fmt.Sprintf("%.1f", got)
	if n < 2 || want <= 0 {
		r.target = "too few power readings: reported, not judged"
		return r
	}
	r.diff = fmt.Sprintf("%+.1f %%", 100*(got-want)/want)
	r.ok = verdict(math.Abs(got-want) <= energyTolerance*want)
	return r
}

// pcieReplays reads "Replays Since Reset" from nvidia-smi -q: no
// --query-gpu field carries the replay counter.
func pcieReplays(smi func(...string) *exec.Cmd) (float64, error) {
	out, err := runSMI(smi("-q", "-i", "0"))
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^\s*Replays Since Reset\s*:\s*(\S+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no \"Replays Since Reset\" in nvidia-smi -q")
	}
	v, ok := smiNumber(m[1])
	if !ok {
		return math.NaN(), nil
	}
	return v, nil
}

func judgePCIeReplays(ss []series, uuid string, before, after float64, err error) row {
	r := row{what: "PCIe replays · nvidia-smi -q", target: "between the readings before and after"}
	v, ferr := find(ss, "kube_gpu_pcie_replay_errors_total", map[string]string{"gpu_id": uuid})
	r.exporter = "absent"
	if ferr == nil {
		r.exporter = strconv.FormatFloat(v, 'f', 0, 64)
	}
	switch {
	case err != nil:
		r.smi, r.target = err.Error(), "reported, not judged"
	case math.IsNaN(before) || math.IsNaN(after):
		r.smi, r.target = "N/A", "absent where nvidia-smi has no value"
		r.ok = verdict(ferr != nil)
	default:
		r.smi = fmt.Sprintf("%.0f / %.0f", before, after)
		r.ok = verdict(ferr == nil && v >= before && v <= after)
	}
	return r
}

// app is one process nvidia-smi lists on the GPU.
type app struct {
	pid, name string
	mib       float64
}

func computeApps(smi func(...string) *exec.Cmd, uuid string) ([]app, error) {
	recs, _, err := runCSV(smi("--query-compute-apps=gpu_uuid,pid,process_name,used_memory", "--format=csv,noheader,nounits"))
	if err != nil {
		return nil, err
	}
	var apps []app
	for _, rec := range recs {
		if len(rec) != 4 {
			return nil, fmt.Errorf("nvidia-smi compute apps row %q: want 4 fields", rec)
		}
		if rec[0] != uuid {
			continue
		}
		mib, ok := smiNumber(rec[3])
		if !ok {
			return nil, fmt.Errorf("nvidia-smi compute apps: used_memory %q", rec[3])
		}
		apps = append(apps, app{pid: rec[1], name: rec[2], mib: mib})
	}
	return apps, nil
}

// judgeProcessMemory compares the memory of the GPU's processes that are
// not the test container's, which the exporter reports as unattributed,
// with nvidia-smi's per-process list. holder says which processes are the
// test container's.
func judgeProcessMemory(ss []series, uuid string, apps []app, err error, holder func(pid, name string) bool, mps bool) row {
	r := row{what: "per-process memory of non-holders (MiB) · --query-compute-apps", target: fmt.Sprintf("±%.0f MiB", memoryToleranceMiB)}
	if mps {
		r.what += " (MPS clients)"
	}
	if err != nil {
		r.smi, r.target = err.Error(), "reported, not judged"
		return r
	}
	var want float64
	var names []string
	for _, a := range apps {
		if holder(a.pid, a.name) {
			continue
		}
		want += a.mib
		names = append(names, filepath.Base(a.name))
	}
	var got float64
	n := 0
	for _, s := range ss {
		if s.name == "kube_gpu_unattributed_memory_used_bytes" && s.labels["gpu_id"] == uuid {
			got += s.value / (1 << 20)
			n++
		}
	}
	r.smi = fmt.Sprintf("%.0f (%d processes: %s)", want, len(names), strings.Join(names, " "))
	r.exporter = fmt.Sprintf("%.1f (%d series)", got, n)
	r.diff = fmt.Sprintf("%+.1f", got-want)
	r.ok = verdict(len(names) > 0 && math.Abs(got-want) <= memoryToleranceMiB)
	return r
}

// dmonSample is one line of nvidia-smi dmon: the GPM metrics of the second
// that ended when it was printed, in percent, by metric ID.
type dmonSample struct {
	at   time.Time
	vals map[int]float64
}

// parseDmonLine reads the GPM columns of one dmon line: dmon appends them
// after its default ones, so they are the last of the line. ok is false for
// headers and short lines.
func parseDmonLine(line string) (vals map[int]float64, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) < len(gpmMetrics)+1 || strings.HasPrefix(f[0], "#") {
		return nil, false, nil
	}
	f = f[len(f)-len(gpmMetrics):]
	vals = make(map[int]float64, len(f))
	for i, s := range f {
		v, perr := strconv.ParseFloat(s, 64)
		if perr != nil {
			return nil, false, fmt.Errorf("nvidia-smi dmon: GPM value %q is not a number (GPM unsupported here?)", s)
		}
		vals[gpmMetrics[i].id] = v
	}
	return vals, true, nil
}

// startDmon runs nvidia-smi dmon for count one-second GPM samples beside
// the scrape, stamping each line as it arrives; wait returns them. The
// exporter's GPM reading is compared with the second around the scrape, not
// with seconds after it: the GPU's activity may move in between.
func startDmon(smi func(...string) *exec.Cmd, count int) (wait func() ([]dmonSample, error)) {
	ids := make([]string, len(gpmMetrics))
	for i, m := range gpmMetrics {
		ids[i] = strconv.Itoa(m.id)
	}
	cmd := smi("dmon", "-i", "0", "-c", strconv.Itoa(count), "--gpm-metrics", strings.Join(ids, ","))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		return func() ([]dmonSample, error) { return nil, fmt.Errorf("nvidia-smi dmon: %w", err) }
	}
	type result struct {
		samples []dmonSample
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		var lines []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			vals, ok, perr := parseDmonLine(sc.Text())
			if perr != nil && r.err == nil {
				r.err = perr
			}
			if ok {
				r.samples = append(r.samples, dmonSample{at: time.Now(), vals: vals})
			}
		}
		if werr := cmd.Wait(); werr != nil && r.err == nil {
			r.err = fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), werr, stderr.Bytes())
		}
		if r.err == nil && len(r.samples) == 0 {
			r.err = fmt.Errorf("nvidia-smi dmon printed no samples:\n%s", strings.Join(lines, "\n"))
		}
		done <- r
	}()
	return func() ([]dmonSample, error) {
		r := <-done
		return r.samples, r.err
	}
}

// dmonAt returns the sample of the second around at: the first printed
// after it, or the last.
func dmonAt(samples []dmonSample, at time.Time) map[int]float64 {
	for _, s := range samples {
		if !s.at.Before(at) {
			return s.vals
		}
	}
	return samples[len(samples)-1].vals
}

func judgeGPM(ss []series, uuid string, gpm map[int]float64, err error) []row {
	supported, serr := find(ss, "kube_gpu_family_supported", map[string]string{"gpu_id": uuid, "family": "gpm"})
	var rows []row
	for _, m := range gpmMetrics {
		r := row{what: fmt.Sprintf("GPM %s (%%) · dmon --gpm-metrics %d", m.name, m.id), target: "±5 points"}
		v, ferr := find(ss, m.metric, map[string]string{"gpu_id": uuid})
		r.exporter = "absent"
		if ferr == nil {
			r.exporter = fmt.Sprintf("%.1f", v*100)
		}
		if err != nil {
			r.smi = "dmon: " + err.Error()
			// Without GPM the exporter says so and serves nothing.
			r.target = "absent, kube_gpu_family_supported{family=\"gpm\"} 0"
			r.ok = verdict(ferr != nil && serr == nil && supported == 0)
			rows = append(rows, r)
			continue
		}
		r.smi = fmt.Sprintf("%.1f", gpm[m.id])
		if ferr == nil {
			r.diff = fmt.Sprintf("%+.1f", v*100-gpm[m.id])
		}
		r.ok = verdict(ferr == nil && math.Abs(v*100-gpm[m.id]) <= 5)
		rows = append(rows, r)
	}
	return rows
}

// judgeHealth checks that the Xid and health families are served: the
// event family's support flag, and exactly one current health status.
func judgeHealth(ss []series, uuid string) []row {
	xid, err := find(ss, "kube_gpu_family_supported", map[string]string{"gpu_id": uuid, "family": "xid_events"})
	rx := row{what: "Xid events family", target: "kube_gpu_family_supported{family=\"xid_events\"} served"}
	rx.exporter = "absent"
	if err == nil {
		rx.exporter = fmt.Sprintf("supported %v", xid)
		var codes []string
		for _, s := range ss {
			if s.name == "kube_gpu_xid_errors_total" && s.labels["gpu_id"] == uuid {
				codes = append(codes, fmt.Sprintf("xid %s: %v", s.labels["xid"], s.value))
			}
		}
		if len(codes) > 0 {
			rx.exporter += "; " + strings.Join(codes, ", ")
		}
	}
	rx.ok = verdict(err == nil)
	rh := row{what: "health status", target: "exactly one status is 1"}
	var current []string
	for _, s := range ss {
		if s.name == "kube_gpu_health_status" && s.labels["gpu_id"] == uuid && s.value == 1 {
			current = append(current, s.labels["status"]+"/"+s.labels["reason"])
		}
	}
	rh.exporter = strings.Join(current, " ")
	rh.ok = verdict(len(current) == 1)
	return []row{rx, rh}
}

// mpsRunning reports whether an MPS control daemon serves this machine:
// its pipe directory holds a control pipe.
func mpsRunning() bool {
	dir := os.Getenv("CUDA_MPS_PIPE_DIRECTORY")
	if dir == "" {
		dir = "/tmp/nvidia-mps"
	}
	_, err := os.Stat(filepath.Join(dir, "control"))
	return err == nil
}

// notInMode is the table's line for a GPU mode the run did not cover.
func notInMode(mode, why string) row {
	return row{what: mode + " case", exporter: "not in this mode", smi: why, target: "runs when the GPU is already in this mode"}
}
