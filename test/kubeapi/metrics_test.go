package kubeapi

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

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
		s, err := tooltest.Scrape(e.Addr)
		last = fmt.Sprint(err)
		if err == nil {
			last = ""
			for _, w := range wants {
				v, ok := s.Get(w.name, w.labels...)
				switch {
				case w.value < 0 && s.Count(w.name, w.labels...) > 0:
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
