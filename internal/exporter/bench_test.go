package exporter

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/benchnode"
)

// BenchmarkHandler times one scrape through the real /metrics handler, as
// Prometheus makes it: everything collector.BenchmarkScrape covers plus the
// Go and process collectors, content negotiation and, in the gzip runs,
// compression. It is the cost per scrape of the running binary's HTTP side.
func BenchmarkHandler(b *testing.B) {
	for _, c := range benchnode.Cases() {
		for _, gzip := range []bool{false, true} {
			name := c.Name + "/plain"
			if gzip {
				name = c.Name + "/gzip"
			}
			b.Run(name, func(b *testing.B) {
				h := startHandler(b, c)
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept", "text/plain;version=0.0.4")
				if gzip {
					req.Header.Set("Accept-Encoding", "gzip")
				}
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
}

// startHandler serves a benchnode case through NewHandler with the
// binary's default flags.
func startHandler(b *testing.B, c benchnode.Case) http.Handler {
	b.Helper()
	dir, err := os.MkdirTemp("", "kge-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	n, err := benchnode.Start(c, dir, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.Close)
	if _, err := n.Kubelet.Read(context.Background()); err != nil {
		b.Fatal(err)
	}
	o, _, err := Parse([]string{"--kube.node-name=gpu-node-01"})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	coll := collector.New(collector.Config{NodeName: o.nodeName, Logger: logger, NVMLStaleAfter: time.Hour,
		Telemetry: true, Health: true, Events: true, Profiling: true, Chargeback: true}, n.Sampler, n.Kubelet, nil)
	h, err := NewHandler(o, coll, logger)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// discard is a ResponseWriter that keeps nothing but the status.
type discard struct {
	header http.Header
	code   int
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(p []byte) (int, error) { return io.Discard.Write(p) }
