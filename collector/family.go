package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Family is one metric family of a level (devices, containers' devices,
// requests, node resources): a name, its help, its type, the labels it adds
// after the level's shared labels, and a pure function from one object of
// the level to its samples. Adding a family is one entry in a level's list
// and its test one table row; the shared labels are added in one place, so
// joins between families never drift.
type Family[T any] struct {
	Name string
	Help string
	// Type is prometheus.GaugeValue unless set.
	Type prometheus.ValueType
	// Labels follow the level's shared labels; Value families have none.
	Labels []string
	// Value is the family's one sample of obj; ok false means obj has none
	// (a reading the device does not support is absent, never zero).
	Value func(obj *T) (v float64, ok bool)
	// Each emits any number of samples of obj with values for Labels; it
	// is used instead of Value by families with Labels.
	Each func(obj *T, emit func(v float64, labelValues ...string))
}

// level is a list of families whose series share labels, with the
// function that gives one object's values for them.
type level[T any] struct {
	families []Family[T]
	descs    []*prometheus.Desc
	// shared appends obj's values of the shared labels to buf.
	shared func(buf []string, obj *T) []string
}

// newLevel builds the descriptors once, at construction.
func newLevel[T any](sharedLabels []string, shared func(buf []string, obj *T) []string, fams []Family[T]) *level[T] {
	l := &level[T]{families: fams, shared: shared, descs: make([]*prometheus.Desc, len(fams))}
	for i, f := range fams {
		labels := append(append([]string(nil), sharedLabels...), f.Labels...)
		l.descs[i] = prometheus.NewDesc(f.Name, f.Help, labels, nil)
	}
	return l
}

// through gives a level over T the shared label values of the object U
// each T refers to (a health row's device, a holder's usage), so that
// levels built on the same object share one label function.
func through[T, U any](shared func([]string, *U) []string, of func(*T) *U) func([]string, *T) []string {
	return func(b []string, t *T) []string { return shared(b, of(t)) }
}

func (l *level[T]) describe(ch chan<- *prometheus.Desc) {
	for _, d := range l.descs {
		ch <- d
	}
}

// collect sends every family's samples of every object. The label buffer
// is reused: const metrics copy the values they are given.
func (l *level[T]) collect(ch chan<- prometheus.Metric, objs []T) {
	var buf []string
	for j := range objs {
		obj := &objs[j]
		buf = l.shared(buf[:0], obj)
		n := len(buf)
		for i, f := range l.families {
			typ := f.Type
			if typ == 0 {
				typ = prometheus.GaugeValue
			}
			if f.Each != nil {
				desc := l.descs[i]
				f.Each(obj, func(v float64, lv ...string) {
					buf = append(buf[:n], lv...)
					ch <- prometheus.MustNewConstMetric(desc, typ, v, buf...)
				})
				continue
			}
			if v, ok := f.Value(obj); ok {
				ch <- prometheus.MustNewConstMetric(l.descs[i], typ, v, buf[:n]...)
			}
		}
	}
}
