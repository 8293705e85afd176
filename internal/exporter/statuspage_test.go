package exporter

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/benchnode"
)

// pageNode serves a benchnode case through NewHandler after one accounting
// step, as Run does before it serves; cacheTTL 0 sends every kubelet read
// to the socket, so a call made by a page view would be counted.
func pageNode(tb testing.TB, c benchnode.Case) (http.Handler, *benchnode.Node) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "kge-page-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	n, err := benchnode.Start(c, dir, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Close)
	o, _, err := Parse([]string{"--kube.node-name=gpu-node-01"})
	if err != nil {
		tb.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	coll := collector.New(collector.Config{NodeName: o.nodeName, Logger: logger, NVMLStaleAfter: time.Hour,
		Telemetry: true, Health: true, Events: true, Profiling: true, Chargeback: true}, n.Sampler, n.Kubelet, nil)
	coll.Account(context.Background())
	h, err := NewHandler(o, coll, logger)
	if err != nil {
		tb.Fatal(err)
	}
	return h, n
}

// TestStatusPageMakesNoSourceCalls: page views read the snapshot the
// scrapes read; they cause no NVML read, no sampler poll and no kubelet
// call, however many there are.
func TestStatusPageMakesNoSourceCalls(t *testing.T) {
	c := benchnode.Cases()[0]
	h, n := pageNode(t, c)
	kubelet, polls, nvmlCalls := n.Kubelet.Calls(), n.Sampler.Polls(), n.NVMLCalls()
	if kubelet != 1 {
		t.Fatalf("the accounting step made %d kubelet calls, want 1", kubelet)
	}
	for range 20 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if rows := strings.Count(rec.Body.String(), `<tr class="gpu"`); rows != c.GPUs {
			t.Fatalf("%d GPU rows, want %d", rows, c.GPUs)
		}
	}
	if got := n.Kubelet.Calls(); got != kubelet {
		t.Errorf("20 page views made %d kubelet calls, want 0", got-kubelet)
	}
	if got := n.Sampler.Polls(); got != polls {
		t.Errorf("20 page views caused %d sampler polls, want 0", got-polls)
	}
	if got := n.NVMLCalls(); got != nvmlCalls {
		t.Errorf("20 page views made %d NVML reads, want 0", got-nvmlCalls)
	}
}

// BenchmarkStatusPage times one view of the page at / on each benchmark
// node: the snapshot read a scrape makes, the page model and the template.
// Compare BenchmarkHandler, a scrape of the same node: the page adds
// nothing to a scrape, which does not build it.
func BenchmarkStatusPage(b *testing.B) {
	for _, c := range benchnode.Cases() {
		b.Run(c.Name, func(b *testing.B) {
			h, _ := pageNode(b, c)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w := &discard{header: http.Header{}}
				h.ServeHTTP(w, req)
				if w.code != 0 && w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
}
