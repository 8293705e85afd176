package statuspage

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
)

//go:embed page.html
var pageHTML string

// MaxRefresh bounds ?refresh=: a reload every hour is the slowest asked
// for; a longer one is a typo.
const MaxRefresh = 3600

// Snapshots is what the page reads: the snapshot a scrape reads, and the
// sources' state. *collector.Collector is one.
type Snapshots interface {
	Gather(ctx context.Context) (collector.View, collector.Health)
	Sources(h collector.Health) []collector.SourceState
}

// Config holds what the page shows besides the snapshot.
type Config struct {
	Node, Version, MetricsPath string
	Profiling                  bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the page. ?refresh=N reloads it every N seconds.
type Handler struct {
	src  Snapshots
	cfg  Config
	tmpl *template.Template
}

// New builds the handler; the template is parsed once, here.
func New(src Snapshots, cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{src: src, cfg: cfg, tmpl: template.Must(template.New("page").Parse(pageHTML))}
}

// Render writes the page of one snapshot.
func (h *Handler) Render(w io.Writer, p Page) error { return h.tmpl.Execute(w, p) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refresh, err := parseRefresh(r.URL.Query().Get("refresh"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	v, health := h.src.Gather(r.Context())
	p := Build(v, h.src.Sources(health), Info{
		Node: h.cfg.Node, Version: h.cfg.Version, MetricsPath: h.cfg.MetricsPath,
		Now: h.cfg.Now(), Refresh: refresh, Profiling: h.cfg.Profiling,
	})
	var buf bytes.Buffer
	if err := h.Render(&buf, p); err != nil {
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	// No script, frame, form or outside resource is ever part of the page:
	// should escaping ever fail, the browser still runs nothing.
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

func parseRefresh(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > MaxRefresh {
		return 0, fmt.Errorf("refresh: want whole seconds from 0 (off) to %d, got %q", MaxRefresh, s)
	}
	return n, nil
}
