package scale

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// self reports whether a family is the exporter's own (its health, the Go
// runtime, the process, the HTTP handler) rather than a GPU's.
func self(family string) bool {
	for _, p := range []string{"kube_gpu_exporter_", "go_", "process_", "promhttp_"} {
		if strings.HasPrefix(family, p) {
			return true
		}
	}
	return false
}

func (c counted) gpuSeries() int {
	n := 0
	for f, k := range c.byFamily {
		if !self(f) {
			n += k
		}
	}
	return n
}

func scenarioTable(nodes []counted) string {
	var b strings.Builder
	b.WriteString("| node | series | GPU and Kubernetes | exporter, Go, process | with `--metrics.exceptions-only` | what |\n|---|--:|--:|--:|--:|---|\n")
	for _, c := range nodes {
		fmt.Fprintf(&b, "| `%s` | %d | %d | %d | %d | %s |\n", c.name, c.series, c.gpuSeries(), c.series-c.gpuSeries(), withoutConstants(c), c.what)
	}
	return b.String()
}

func switchTable(base counted, switches []counted) string {
	var b strings.Builder
	b.WriteString("| flags | series | change | families that go |\n|---|--:|--:|---|\n")
	fmt.Fprintf(&b, "| (defaults) | %d | | |\n", base.series)
	for _, c := range switches {
		var gone []string
		for f := range base.byFamily {
			if c.byFamily[f] == 0 {
				gone = append(gone, "`"+f+"`")
			}
		}
		slices.Sort(gone)
		fmt.Fprintf(&b, "| `%s` | %d | %+d | %s |\n", c.name, c.series, c.series-base.series, strings.Join(gone, ", "))
	}
	return b.String()
}

// familyTable is every GPU family's series on each node.
func familyTable(nodes []counted) string {
	var fams []string
	for _, c := range nodes {
		for f := range c.byFamily {
			if !self(f) && !slices.Contains(fams, f) {
				fams = append(fams, f)
			}
		}
	}
	slices.Sort(fams)
	var b strings.Builder
	b.WriteString("| family |")
	for _, c := range nodes {
		fmt.Fprintf(&b, " `%s` |", c.name)
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", len(nodes)) + "\n")
	for _, f := range fams {
		fmt.Fprintf(&b, "| `%s` |", f)
		for _, c := range nodes {
			fmt.Fprintf(&b, " %d |", c.byFamily[f])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// checkDocs compares the generated tables of docs/scale.md with the
// counts, and rewrites them under -update.
func checkDocs(t *testing.T, nodes, switches []counted) {
	raw, err := os.ReadFile(docsFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for name, table := range map[string]string{
		"series-per-node":   scenarioTable(nodes),
		"series-per-switch": switchTable(nodes[0], switches),
		"series-per-family": familyTable(nodes),
	} {
		begin, end := "<!-- generated "+name+" -->\n", "<!-- end "+name+" -->"
		i, j := strings.Index(doc, begin), strings.Index(doc, end)
		if i < 0 || j < i {
			t.Errorf("docs/scale.md has no %q ... %q markers", begin, end)
			continue
		}
		if got := doc[i+len(begin) : j]; got != table {
			if !*update {
				t.Errorf("docs/scale.md table %s is not what the exporter serves (go test ./test/scale -run TestSeries -update):\nwant\n%s\nhave\n%s", name, table, got)
			}
			doc = doc[:i+len(begin)] + table + doc[j:]
		}
	}
	if *update {
		if err := os.WriteFile(docsFile, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
