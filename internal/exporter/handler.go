package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/version"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/statuspage"
)

// NewHandler builds the HTTP routes: the status page and the metrics path.
// Only GET and HEAD are served.
func NewHandler(o *Options, coll *collector.Collector, logger *slog.Logger) (http.Handler, error) {
	labels := prometheus.Labels{}
	if o.clusterName != "" {
		labels["cluster_name"] = o.clusterName
	}
	if o.clusterID != "" {
		labels["cluster_id"] = o.clusterID
	}
	static := prometheus.NewRegistry()
	wrap := prometheus.WrapRegistererWith(labels, static)
	wrap.MustRegister(
		versioncollector.NewCollector("kube_gpu_exporter"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	writeErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kube_gpu_exporter_http_write_errors_total",
		Help: "Scrape responses that could not be written in full, mostly because the client went away; each is logged once at debug level.",
	})
	wrap.MustRegister(writeErrors)
	scrapes := &metricsHandler{static: static, coll: coll, labels: labels, logger: logger, writeErrors: writeErrors}
	if o.maxRequests > 0 {
		scrapes.inflight = make(chan struct{}, o.maxRequests)
	}
	// promhttp_metric_handler_requests_total and _in_flight, as
	// node_exporter serves them: scrapes refused by --web.max-requests are
	// counted under code 503.
	metrics := promhttp.InstrumentMetricHandler(wrap, scrapes)

	// The page at / reads the snapshot a scrape reads: a page view makes no
	// NVML or kubelet call, and it is served behind the same TLS and
	// authentication as the metrics.
	status := statuspage.New(coll, statuspage.Config{
		Node: o.nodeName, Version: version.Version, MetricsPath: o.metricsPath, Profiling: o.pprof,
	})
	mux := http.NewServeMux()
	mux.Handle("GET "+o.metricsPath, metrics)
	mux.Handle("GET /{$}", status)
	if o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux, nil
}

// maxScrapeTimeout bounds the scrape deadline
// X-Prometheus-Scrape-Timeout-Seconds sets: the server's WriteTimeout.
const maxScrapeTimeout = 60 * time.Second

// metricsHandler serves one scrape: the scrape's context (bounded by
// Prometheus' X-Prometheus-Scrape-Timeout-Seconds) reaches every source.
type metricsHandler struct {
	static   *prometheus.Registry
	coll     *collector.Collector
	labels   prometheus.Labels
	logger   *slog.Logger
	inflight chan struct{} // nil: no limit
	// writeErrors counts responses cut short by a failed write.
	writeErrors prometheus.Counter
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.inflight != nil {
		select {
		case h.inflight <- struct{}{}:
			defer func() { <-h.inflight }()
		default:
			http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
			return
		}
	}
	ctx := r.Context()
	if s := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); s != "" {
		if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
			// Leave a little of the scrape's budget for encoding and the
			// network. A huge (or infinite) value would overflow the
			// duration into the past: no scrape waits longer than the
			// server would write its response anyway.
			timeout := maxScrapeTimeout
			if secs*0.9 < timeout.Seconds() {
				timeout = time.Duration(secs * 0.9 * float64(time.Second))
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
	}
	scrape := prometheus.NewRegistry()
	var reg prometheus.Registerer = scrape
	if len(h.labels) > 0 {
		// Wrapping rebuilds the descriptor of every series on every scrape
		// (a quarter of a scrape's time); only pay it when there are labels
		// to add.
		reg = prometheus.WrapRegistererWith(h.labels, scrape)
	}
	reg.MustRegister(h.coll.WithContext(ctx))
	sw := &scrapeWriter{ResponseWriter: w}
	promhttp.HandlerFor(abortOnShutdown{disjoint{h.static, scrape}, r.Context()}, promhttp.HandlerOpts{
		ErrorLog:      scrapeLog{h.logger},
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(sw, r)
	if sw.err != nil {
		h.writeErrors.Inc()
		h.logger.Debug("scrape response not delivered", "remote", r.RemoteAddr, "err", sw.err)
	}
}

// abortOnShutdown aborts a scrape whose sources were cut short by shutdown
// (serve cancels the scrapes in flight): served, it would report them down,
// a false outage on every rollout. An aborted response is a failed scrape
// of an exporter going away, which it is.
type abortOnShutdown struct {
	g   prometheus.Gatherer
	ctx context.Context
}

func (a abortOnShutdown) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := a.g.Gather()
	if sc, ok := a.ctx.Value(shutdownKey{}).(context.Context); ok && sc.Err() != nil {
		panic(http.ErrAbortHandler)
	}
	return mfs, err
}

// scrapeWriter remembers the first failed write and fails every later one
// at once: promhttp goes on encoding family after family to a client that
// has gone away.
type scrapeWriter struct {
	http.ResponseWriter
	err error
}

func (w *scrapeWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.ResponseWriter.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// scrapeLog is promhttp's error log. A failed write is logged once per
// request by the handler (promhttp reports it once per metric family), and
// a client's Accept-Encoding that names no encoding promhttp has is served
// uncompressed, which is not an error of this exporter. Anything else (a
// collector's inconsistent series) stays an error.
type scrapeLog struct{ logger *slog.Logger }

func (l scrapeLog) Println(v ...any) {
	msg := strings.TrimSpace(fmt.Sprintln(v...))
	switch {
	case strings.HasPrefix(msg, "error encoding and sending metric family"):
	case strings.HasPrefix(msg, "error getting writer"):
		l.logger.Debug("Accept-Encoding not served; answering uncompressed", "detail", msg)
	default:
		l.logger.Error(msg)
	}
}

// disjoint gathers two registries that expose no metric name in common (the
// process-wide collectors and the per-scrape collector) and merges their
// families, which each registry has already checked and sorted.
// prometheus.Gatherers would check and sort every series a second time,
// which on a large node costs a fifth of the scrape. Should both ever expose
// the same name, it falls back to prometheus.Gatherers and its checks.
type disjoint [2]prometheus.Gatherer

func (d disjoint) Gather() ([]*dto.MetricFamily, error) {
	a, errA := d[0].Gather()
	b, errB := d[1].Gather()
	out := make([]*dto.MetricFamily, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch na, nb := a[i].GetName(), b[j].GetName(); {
		case na < nb:
			out = append(out, a[i])
			i++
		case nb < na:
			out = append(out, b[j])
			j++
		default:
			return prometheus.Gatherers{d[0], d[1]}.Gather()
		}
	}
	out = append(append(out, a[i:]...), b[j:]...)
	var errs prometheus.MultiError
	for k, err := range []error{errA, errB} {
		if err != nil {
			errs = append(errs, fmt.Errorf("[from Gatherer #%d] %w", k+1, err))
		}
	}
	return out, errs.MaybeUnwrap()
}
