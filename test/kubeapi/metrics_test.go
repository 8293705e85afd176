package kubeapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// series is one scraped sample: its name and labels in one string,
// `name{a="x",b="y"}`, with labels sorted.
type series map[string]float64

func scrape(addr string) (series, error) {
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
	out := series{}
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

// get returns the value of the series with name whose labels include
// those given (a="x" pairs), and whether exactly one matched.
func (s series) get(name string, labels ...string) (float64, bool) {
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

func (s series) count(name string, labels ...string) int {
	n := 0
	for k := range s {
		if strings.HasPrefix(k, name+"{") && !slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(k, l) }) {
			n++
		}
	}
	return n
}

// want is one expected value of a scrape.
type want struct {
	name   string
	labels []string
	value  float64 // -1: the series must be absent
}

// waitFor polls the exporter until every want holds, and returns how long
// that took; it fails the test after timeout.
func waitFor(t *testing.T, e *tooltest.Exporter, timeout time.Duration, wants ...want) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		s, err := scrape(e.Addr)
		last = fmt.Sprint(err)
		if err == nil {
			last = ""
			for _, w := range wants {
				v, ok := s.get(w.name, w.labels...)
				switch {
				case w.value < 0 && s.count(w.name, w.labels...) > 0:
					last += fmt.Sprintf("%s%v present; ", w.name, w.labels)
				case w.value >= 0 && (!ok || v != w.value):
					last += fmt.Sprintf("%s%v = %v (found %v), want %v; ", w.name, w.labels, v, ok, w.value)
				}
			}
			if last == "" {
				return time.Since(start)
			}
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %v: %s", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func l(name, value string) string { return fmt.Sprintf("%s=%q", name, value) }

var upKube = want{"kube_gpu_exporter_up", []string{l("source", "kubernetes")}, 1}

func req(pod, ctr string, v float64) want {
	return want{"containerGpuRequests", []string{l("pod", pod), l("container", ctr), l("resource", gpu)}, v}
}

func podReq(pod string, v float64) want {
	return want{"kube_gpu_pod_requests", []string{l("pod", pod), l("resource", gpu)}, v}
}

func lim(pod, ctr string, v float64) want {
	return want{"containerGpuLimits", []string{l("pod", pod), l("container", ctr), l("resource", gpu)}, v}
}

var warnRE = regexp.MustCompile(`(?i)level=warn`)

// warnings returns the exporter's WARN lines that contain all of substrs.
func warnings(e *tooltest.Exporter, substrs ...string) []string {
	var out []string
	for line := range strings.Lines(e.Log()) {
		if warnRE.MatchString(line) && !slices.ContainsFunc(substrs, func(s string) bool { return !strings.Contains(line, s) }) {
			out = append(out, line)
		}
	}
	return out
}
