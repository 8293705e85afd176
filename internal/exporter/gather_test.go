package exporter

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func gaugeRegistry(t *testing.T, names ...string) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	for _, n := range names {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: n + " help"})
		g.Set(1)
		reg.MustRegister(g)
	}
	return reg
}

func familyNames(mfs []*dto.MetricFamily) []string {
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	return out
}

// disjoint must return what prometheus.Gatherers returns: every family once,
// sorted by name.
func TestDisjointMergesSorted(t *testing.T) {
	a := gaugeRegistry(t, "go_goroutines", "process_open_fds", "kube_gpu_exporter_build_info")
	b := gaugeRegistry(t, "containerGpuDutyCycle", "kube_gpu_exporter_up", "nodeGpuCapacity", "zz_last")
	got, err := disjoint{a, b}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want, err := prometheus.Gatherers{a, b}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if g, w := familyNames(got), familyNames(want); !slices.Equal(g, w) {
		t.Fatalf("families = %v, want %v", g, w)
	}
	if !slices.IsSorted(familyNames(got)) {
		t.Fatalf("not sorted: %v", familyNames(got))
	}
}

// A name in both registries is left to prometheus.Gatherers, which reports
// the clash instead of serving two families of one name.
func TestDisjointFallsBackOnSharedName(t *testing.T) {
	a := gaugeRegistry(t, "a", "shared")
	b := prometheus.NewRegistry()
	b.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "shared", Help: "other help"}))
	got, err := disjoint{a, b}.Gather()
	if err == nil || !strings.Contains(err.Error(), "has help") {
		t.Fatalf("err = %v, want the help clash prometheus.Gatherers reports", err)
	}
	if n := familyNames(got); !slices.Equal(n, []string{"a", "shared"}) {
		t.Fatalf("families = %v", n)
	}
}

type failing struct{}

func (failing) Gather() ([]*dto.MetricFamily, error) { return nil, errors.New("boom") }

// A failing side does not hide the other's families, and its error is kept.
func TestDisjointKeepsErrors(t *testing.T) {
	got, err := disjoint{failing{}, gaugeRegistry(t, "b")}.Gather()
	if err == nil || !strings.Contains(err.Error(), "[from Gatherer #1] boom") {
		t.Fatalf("err = %v", err)
	}
	if n := familyNames(got); !slices.Equal(n, []string{"b"}) {
		t.Fatalf("families = %v", n)
	}
}
