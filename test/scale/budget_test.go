package scale

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// budgetFile holds the series each scenario may serve.
var budgetFile = filepath.Join("testdata", "series-budget.txt")

// labelLimit is the most labels, __name__ included, that Mimir
// (-validation.max-label-names-per-series), Cortex and VictoriaMetrics
// (-maxLabelsPerTimeseries) accept by default.
const labelLimit = 30

// scrapeLabels is what the path to long-term storage may add to a series:
// job and instance; the namespace, pod, container, service and endpoint
// labels of a ServiceMonitor or PodMonitor target (the exporter's own
// namespace, pod and container win with honorLabels); the cluster and
// __replica__ labels of deploy/prometheus/scale (external labels of the
// agent and of each shard); and one more a user may add.
const scrapeLabels = 10

// TestSeries counts the series of every scenario and switch, holds them to
// the budget, checks every series' labels against the long-term stores'
// limit and compares docs/scale.md's tables with the counts.
func TestSeries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 17 simulated nodes")
	}
	all := measure(t, append(scenarioRuns(), switchRuns()...))
	nodes, switches := all[:len(scenarios)+1], all[len(scenarios)+1:]

	t.Run("budget", func(t *testing.T) { checkBudget(t, nodes) })
	t.Run("exceptions-only", func(t *testing.T) {
		// The docs' exceptions-only column is computed from each full
		// scrape; the flag's own run must serve exactly that.
		want := withoutConstants(nodes[0])
		for _, c := range switches {
			if c.name == "--metrics.exceptions-only" && c.series != want {
				t.Errorf("built-in node with --metrics.exceptions-only serves %d series, the full scrape less its constant flags %d", c.series, want)
			}
		}
	})
	t.Run("labels", func(t *testing.T) {
		for _, c := range all {
			for _, s := range c.scrape.samples {
				if n := len(s.labels) + 1; n+scrapeLabels > labelLimit {
					t.Errorf("%s: %s has %d labels with __name__; with the %d a scrape and remote write may add that is over the %d-label limit of Mimir and VictoriaMetrics", c.name, s.key(), n, scrapeLabels, labelLimit)
				}
			}
		}
	})
	t.Run("docs", func(t *testing.T) { checkDocs(t, nodes, switches) })
}

// checkBudget fails when a scenario serves more series than its budget,
// and rewrites the budget under -update.
func checkBudget(t *testing.T, nodes []counted) {
	if *update {
		var b strings.Builder
		b.WriteString("# Series each simulated node serves with default flags (test/scale:\n# TestSeries), Xid and error counters left out. A change that adds series\n# must raise these on purpose: go test ./test/scale -run TestSeries -update\n")
		for _, c := range nodes {
			fmt.Fprintf(&b, "%s %d\n", c.name, c.series)
		}
		if err := os.WriteFile(budgetFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	budget, err := readBudget()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range nodes {
		limit, ok := budget[c.name]
		switch {
		case !ok:
			t.Errorf("%s has no budget in %s; add one (go test ./test/scale -run TestSeries -update)", c.name, budgetFile)
		case c.series > limit:
			t.Errorf("%s serves %d series, over its budget of %d in %s: %s. If the new series are meant, "+
				"raise the budget on purpose (go test ./test/scale -run TestSeries -update rewrites it and docs/scale.md) and say in the commit why they are worth it",
				c.name, c.series, limit, filepath.Join("test/scale", budgetFile), growth(c))
		case c.series < limit:
			t.Logf("%s serves %d series, %d under its budget: lower it with -update", c.name, c.series, limit-c.series)
		}
	}
}

// growth names the families of c, largest first, to show where series went.
func growth(c counted) string {
	fams := make([]string, 0, len(c.byFamily))
	for f := range c.byFamily {
		fams = append(fams, f)
	}
	slices.SortFunc(fams, func(a, b string) int { return c.byFamily[b] - c.byFamily[a] })
	var out []string
	for _, f := range fams[:min(5, len(fams))] {
		out = append(out, fmt.Sprintf("%s %d", f, c.byFamily[f]))
	}
	return "largest families " + strings.Join(out, ", ")
}

func readBudget() (map[string]int, error) {
	f, err := os.Open(budgetFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, n, ok := strings.Cut(line, " ")
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: %q is not `scenario count`", budgetFile, line)
		}
		out[name] = v
	}
	return out, sc.Err()
}

// withoutConstants is c's count less the series --metrics.exceptions-only
// drops: support flags at 1 and inactive clock event reasons.
func withoutConstants(c counted) int {
	n := c.series
	for _, s := range c.scrape.samples {
		if s.family == "kube_gpu_family_supported" && s.value == 1 || s.family == "kube_gpu_clock_event_active" && s.value == 0 {
			n--
		}
	}
	return n
}

var docsFile = filepath.Join(tooltest.RepoRoot(), "docs", "scale.md")
