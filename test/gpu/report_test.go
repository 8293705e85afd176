package gpu

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The result table: each target judged once, printed and written out.

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
