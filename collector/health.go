package collector

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// selfDescs are the exporter's own health families, emitted for every
// source in use like node_exporter's per-collector success and duration.
type selfDescs struct {
	up, duration, errors, unmatched *prometheus.Desc
}

func newSelfDescs() selfDescs {
	return selfDescs{
		up:        prometheus.NewDesc(Namespace+"_up", "Whether the source answered in this scrape (1) or not (0).", []string{"source"}, nil),
		duration:  prometheus.NewDesc(Namespace+"_scrape_duration_seconds", "Seconds spent reading the source: the last NVML poll, or this scrape's kubelet call.", []string{"source"}, nil),
		errors:    prometheus.NewDesc(Namespace+"_errors_total", "Errors met reading a source, by reason.", []string{"source", "reason"}, nil),
		unmatched: prometheus.NewDesc(Namespace+"_unmatched_devices", "Device IDs the kubelet allocated that match no NVML device; such containers have no usage series.", nil, nil),
	}
}

func (s selfDescs) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.up, s.duration, s.errors, s.unmatched} {
		ch <- d
	}
}

func (c *Collector) emitHealth(ch chan<- prometheus.Metric, v View, h Health) {
	gauge := func(d *prometheus.Desc, val float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, val, lv...)
	}
	gauge(c.self.up, b2f(h.NVMLUp), "nvml")
	gauge(c.self.duration, h.NVMLDuration, "nvml")
	emitErrors(ch, c.self.errors, "nvml", c.nvml.Errors())
	if h.HasKubelet {
		gauge(c.self.up, b2f(h.KubeletUp), "kubelet")
		gauge(c.self.duration, h.KubeletDuration, "kubelet")
		emitErrors(ch, c.self.errors, "kubelet", c.kubelet.Errors())
		gauge(c.self.unmatched, float64(len(v.Unmatched)))
	}
	if h.HasKube {
		gauge(c.self.up, b2f(h.KubeUp), "kubernetes")
		emitErrors(ch, c.self.errors, "kubernetes", c.specs.Errors())
	}
}

func emitErrors(ch chan<- prometheus.Metric, d *prometheus.Desc, source string, counts map[string]uint64) {
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(counts[r]), source, r)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stateLog logs a condition when it starts (WARN) and when it ends (INFO),
// not once per scrape. Its keys are the collector's own fixed conditions,
// so it stays small whatever the sources send and a state change is always
// logged.
type stateLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	bad    map[string]bool
}

func newStateLog(l *slog.Logger) *stateLog { return &stateLog{logger: l, bad: map[string]bool{}} }

// set records whether condition key holds now and logs a change.
func (s *stateLog) set(key string, bad bool, msg string, args ...any) {
	s.mu.Lock()
	was := s.bad[key]
	s.bad[key] = bad
	s.mu.Unlock()
	switch {
	case bad && !was:
		s.logger.Warn(msg, args...)
	case !bad && was:
		s.logger.Info("recovered: " + key)
	}
}

// maxLoggedIDs bounds how many unmatched device IDs are remembered as
// already logged.
const maxLoggedIDs = 4096

// idLog logs each kubelet device ID that matches no NVML device once, for
// as long as it stays unmatched. It remembers only the IDs of the last
// scrape, at most max of them, so junk IDs from the kubelet neither grow
// memory nor silence other warnings; IDs past the bound are summed up in
// one line.
type idLog struct {
	logger *slog.Logger
	max    int
	mu     sync.Mutex
	seen   map[string]struct{}
}

func newIDLog(l *slog.Logger, maxIDs int) *idLog {
	return &idLog{logger: l, max: maxIDs, seen: map[string]struct{}{}}
}

func (l *idLog) update(ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := make(map[string]struct{}, min(len(ids), l.max))
	over := 0
	for _, id := range ids {
		if len(next) >= l.max {
			over++
			continue
		}
		next[id] = struct{}{}
		if _, logged := l.seen[id]; !logged {
			l.logger.Warn("kubelet device ID matches no NVML device; its container gets no usage series", "device_id", id)
		}
	}
	if over > 0 && len(l.seen) < l.max {
		l.logger.Warn("more kubelet device IDs match no NVML device than are logged one by one", "not_logged", over)
	}
	l.seen = next
}

// SourceState is one source's state as a person reads it: whether it
// answered, why not, and the errors it has met since start.
type SourceState struct {
	// Name is the source label of kube_gpu_exporter_up.
	Name string
	Up   bool
	// Err is why the source is down; empty when it is up.
	Err string
	// Errors counts the errors met reading the source since start, by
	// reason (kube_gpu_exporter_errors_total).
	Errors map[string]uint64
	// LastErr is the latest error the source returned and LastErrAt when,
	// also after it has recovered; empty if it never failed.
	LastErr   string
	LastErrAt time.Time
}

// Sources returns the state of every source in use, as the scrape that
// returned h saw it, in the order the metrics list them.
func (c *Collector) Sources(h Health) []SourceState {
	msg := func(up bool, err error) string {
		if up || err == nil {
			return ""
		}
		return err.Error()
	}
	out := []SourceState{{Name: "nvml", Up: h.NVMLUp, Err: msg(h.NVMLUp, h.NVMLErr), Errors: c.nvml.Errors()}}
	if h.HasKubelet {
		out = append(out, SourceState{Name: "kubelet", Up: h.KubeletUp, Err: msg(h.KubeletUp, h.KubeletErr), Errors: c.kubelet.Errors()})
	}
	if h.HasKube {
		out = append(out, SourceState{Name: "kubernetes", Up: h.KubeUp, Err: msg(h.KubeUp, h.KubeErr), Errors: c.specs.Errors()})
	}
	for i := range out {
		out[i].LastErr, out[i].LastErrAt = c.lastErr.get(out[i].Name)
	}
	return out
}

// lastErrors keeps each source's latest error and when it came, so that
// the status page can say what went wrong after the source has recovered.
// Its keys are the fixed source names; a scrape with every source up does
// not take its lock.
type lastErrors struct {
	mu sync.Mutex
	m  map[string]lastError
}

type lastError struct {
	msg string
	at  time.Time
}

func (l *lastErrors) note(source string, err error, at time.Time) {
	if err == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]lastError{}
	}
	l.m[source] = lastError{err.Error(), at}
}

func (l *lastErrors) get(source string) (string, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[source]
	return e.msg, e.at
}
