package tooltest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Series is one scrape: each sample's value by its name and labels in one
// string, `name{a="x",b="y"}`, with labels sorted.
type Series map[string]float64

// Scraped is a readiness check for StartExporter: addr serves /metrics that
// parse.
func Scraped(addr string) error {
	_, err := Scrape(addr)
	return err
}

// Scrape reads addr's /metrics over plain HTTP.
func Scrape(addr string) (Series, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape: %s %w", resp.Status, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	out := Series{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out, nil
}

// Get returns the value of the series with name whose labels include
// those given (a="x" pairs), and whether exactly one matched.
func (s Series) Get(name string, labels ...string) (float64, bool) {
	var v float64
	n := 0
	for k, val := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		if !slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(k, l) }) {
			v, n = val, n+1
		}
	}
	return v, n == 1
}

// Count returns how many series named name have all of labels.
func (s Series) Count(name string, labels ...string) int {
	n := 0
	for k := range s {
		if strings.HasPrefix(k, name+"{") && !slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(k, l) }) {
			n++
		}
	}
	return n
}
