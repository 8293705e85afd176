package deploy_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// chartOnlyLabels are the labels only Helm sets.
var chartOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by"}

// The kustomize base renders the same objects as the chart's defaults, apart
// from its Namespace and Helm's own labels.
func TestKustomizeMatchesChartDefaults(t *testing.T) {
	kustomize := tooltest.Require(t, "kustomize")
	kobjs := decodeAll(t, run(t, kustomize, "build", kustomizeDir))
	hobjs := helmTemplate(t)

	var ns []object
	kmap := map[string]object{}
	for _, o := range kobjs {
		if o.Kind == "Namespace" {
			ns = append(ns, o)
			continue
		}
		kmap[o.Kind+"/"+o.Name] = o
	}
	if len(ns) != 1 || ns[0].Name != "kube-gpu-exporter" {
		t.Errorf("namespaces = %v", kinds(ns))
	}
	var hk []string
	for _, o := range hobjs {
		hk = append(hk, o.Kind+"/"+o.Name)
	}
	var kk []string
	for k := range kmap {
		kk = append(kk, k)
	}
	slices.Sort(hk)
	slices.Sort(kk)
	if !slices.Equal(hk, kk) {
		t.Fatalf("kustomize renders %v, the chart %v", kk, hk)
	}
	for _, h := range hobjs {
		k := kmap[h.Kind+"/"+h.Name]
		if k.Namespace != h.Namespace {
			t.Errorf("%s/%s: namespace %q, chart %q", h.Kind, h.Name, k.Namespace, h.Namespace)
		}
		hn, kn := normalize(t, h.Typed), normalize(t, k.Typed)
		if !reflect.DeepEqual(hn, kn) {
			hj, _ := json.MarshalIndent(hn, "", "  ")
			kj, _ := json.MarshalIndent(kn, "", "  ")
			t.Errorf("%s/%s differs between the chart and kustomize:\nchart:\n%s\nkustomize:\n%s", h.Kind, h.Name, hj, kj)
		}
	}
}

// normalize round-trips a typed object to a generic map (so formatting does
// not matter) and drops the chart-only labels.
func normalize(t *testing.T, typed any) map[string]any {
	t.Helper()
	b, err := json.Marshal(typed)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	dropLabels(m, "metadata", "labels")
	dropLabels(m, "spec", "template", "metadata", "labels")
	return m
}

func dropLabels(m map[string]any, path ...string) {
	cur := m
	for _, p := range path[:len(path)-1] {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return
		}
		cur = next
	}
	labels, ok := cur[path[len(path)-1]].(map[string]any)
	if !ok {
		return
	}
	for _, l := range chartOnlyLabels {
		delete(labels, l)
	}
}
