package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type row struct {
	name  string
	v     float64
	has   bool
	kinds []string
}

// levelCollector exposes one level over fixed objects.
type levelCollector struct {
	l    *level[row]
	objs []row
}

func (c levelCollector) Describe(ch chan<- *prometheus.Desc) { c.l.describe(ch) }
func (c levelCollector) Collect(ch chan<- prometheus.Metric) { c.l.collect(ch, c.objs) }

func TestLevelSharedLabelsAbsenceAndEach(t *testing.T) {
	fams := []Family[row]{
		{Name: "t_value", Help: "v", Value: func(r *row) (float64, bool) { return r.v, r.has }},
		{Name: "t_kinds_total", Help: "k", Type: prometheus.CounterValue, Labels: []string{"kind"},
			Each: func(r *row, emit func(float64, ...string)) {
				for i, k := range r.kinds {
					emit(float64(i+1), k)
				}
			}},
	}
	l := newLevel([]string{"node", "name"}, func(b []string, r *row) []string { return append(b, "n1", r.name) }, fams)
	c := levelCollector{l: l, objs: []row{
		{name: "a", v: 0.5, has: true, kinds: []string{"x", "y"}},
		{name: "b", v: 0, has: false}, // unsupported: absent, not zero
	}}
	want := `
# HELP t_value v
# TYPE t_value gauge
t_value{name="a",node="n1"} 0.5
# HELP t_kinds_total k
# TYPE t_kinds_total counter
t_kinds_total{kind="x",name="a",node="n1"} 1
t_kinds_total{kind="y",name="a",node="n1"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// Every family of every level has a name under the documented scheme: a
// Container Insights name, or the kube_gpu_ prefix.
func TestFamilyNames(t *testing.T) {
	contract := map[string]bool{
		"containerGpuDutyCycle": true, "containerGpumemoryTotalBytes": true, "containerGpumemoryUsedBytes": true,
		"containerGpuRequests": true, "containerGpuLimits": true, "nodeGpuCapacity": true, "nodeGpuAllocatable": true,
		"nodeGpuDutyCycle": true, "nodeGpumemoryTotalBytes": true, "nodeGpumemoryUsedBytes": true,
	}
	var names []string
	for _, f := range deviceFamilies {
		names = append(names, f.Name)
	}
	for _, f := range usageFamilies {
		names = append(names, f.Name)
	}
	for _, f := range attributionFamilies {
		names = append(names, f.Name)
	}
	for _, f := range unattributedFamilies {
		names = append(names, f.Name)
	}
	for _, f := range requestFamilies {
		names = append(names, f.Name)
	}
	for _, f := range nodeResourceFamilies {
		names = append(names, f.Name)
	}
	for _, n := range names {
		if !contract[n] && !strings.HasPrefix(n, Prefix+"_") {
			t.Errorf("%s: neither a Container Insights name nor under %s_", n, Prefix)
		}
		if strings.HasPrefix(n, Namespace+"_") {
			t.Errorf("%s: GPU data under the exporter's own prefix %s_", n, Namespace)
		}
	}
}
