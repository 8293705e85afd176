package collector_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/benchnode"
)

// The benchmarks below put a number on the exporter's own overhead.
// BenchmarkScrape scrapes each case two ways:
//
//   - exporter: the path of one HTTP scrape. A fresh registry holding
//     the collector bound to the scrape's context, Gather, and encoding to
//     the text exposition format. The collector reads the sampler's snapshot
//     and the real pod-resources client's cached reply (over a real socket),
//     joins them and builds const metrics.
//   - floor: client_golang alone. The same series (same descriptors,
//     same label values, same values) built as const metrics from prepared
//     slices, with no lookups, gathered and encoded the same way.
//
// exporter/floor is what the exporter adds over the cheapest possible exporter
// of the same series; scripts/bench.sh prints it.

// startCase starts a benchnode case and a Collector over it. The socket lives
// in a short private directory: unix socket paths are limited to ~108 bytes.
func startCase(tb testing.TB, c benchnode.Case, cacheTTL time.Duration, now func() time.Time) (*benchnode.Node, *collector.Collector) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "kge-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	n, err := benchnode.Start(c, dir, cacheTTL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Close)
	var specs collector.SpecSource
	if c.API {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := c.StartAPI(ctx)
		tb.Cleanup(func() { cancel(); w.Wait() })
		if err != nil {
			tb.Fatal(err)
		}
		specs = w
	}
	coll := collector.New(collector.Config{NodeName: benchnode.NodeName, NVMLStaleAfter: time.Hour, Now: now,
		Telemetry: true, Health: true, Events: true, Profiling: true, Chargeback: true}, n.Sampler, n.Kubelet, specs)
	// One accounting step reads the kubelet, as the exporter's background
	// loop does before it serves: scrapes then never call it.
	coll.Account(context.Background())
	if n.Kubelet.Calls() == 0 {
		tb.Fatal("the accounting step did not read the kubelet")
	}
	return n, coll
}

// scrape is one scrape as the HTTP handler runs it, less HTTP: a per-request
// registry, Gather, text encoding. It returns the number of series.
func scrape(ctx context.Context, c prometheus.Collector, buf *bytes.Buffer) (int, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return 0, err
	}
	return encode(reg, buf)
}

// encode gathers g and writes the text exposition format to buf.
func encode(g prometheus.Gatherer, buf *bytes.Buffer) (int, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	buf.Reset()
	enc := expfmt.NewEncoder(buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	n := 0
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return 0, err
		}
		n += len(mf.GetMetric())
	}
	return n, nil
}

// prepared is one series, ready to be turned into a const metric.
type prepared struct {
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	value  float64
	labels []string
}

// floor is a collector of prepared series: the least any exporter of these
// series must do per scrape.
type floor struct {
	descs  []*prometheus.Desc
	series []prepared
}

func (f *floor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
}

func (f *floor) Collect(ch chan<- prometheus.Metric) {
	for i := range f.series {
		s := &f.series[i]
		ch <- prometheus.MustNewConstMetric(s.desc, s.typ, s.value, s.labels...)
	}
}

// prepareFloor scrapes c once and keeps what it exposed as plain values: one
// descriptor per family (its name, help and label names) and every series'
// label values and value. It reads only the exposition, so it follows the
// collector's metric set as that changes.
func prepareFloor(tb testing.TB, c prometheus.Collector) *floor {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	f := &floor{}
	for _, mf := range mfs {
		var typ prometheus.ValueType
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			typ = prometheus.GaugeValue
		case dto.MetricType_COUNTER:
			typ = prometheus.CounterValue
		default:
			tb.Fatalf("family %s has type %s; the floor knows gauges and counters", mf.GetName(), mf.GetType())
		}
		var names []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			names = append(names, lp.GetName())
		}
		desc := prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil)
		f.descs = append(f.descs, desc)
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(names) {
				tb.Fatalf("family %s mixes label sets", mf.GetName())
			}
			s := prepared{desc: desc, typ: typ, value: m.GetGauge().GetValue()}
			if typ == prometheus.CounterValue {
				s.value = m.GetCounter().GetValue()
			}
			for i, lp := range m.GetLabel() {
				if lp.GetName() != names[i] {
					tb.Fatalf("family %s mixes label sets", mf.GetName())
				}
				s.labels = append(s.labels, lp.GetValue())
			}
			f.series = append(f.series, s)
		}
	}
	return f
}

// TestFloorMatchesScrape checks that the floor benchmark encodes exactly what
// a scrape does, so the ratio compares like with like. The collector's clock
// is frozen so the kubelet call's duration reads the same in both.
func TestFloorMatchesScrape(t *testing.T) {
	frozen := func() time.Time { return benchnode.Now }
	for _, c := range append(benchnode.Cases(), benchnode.APICases()...) {
		t.Run(c.Name, func(t *testing.T) {
			_, coll := startCase(t, c, time.Hour, frozen)
			var got, want bytes.Buffer
			n, err := scrape(context.Background(), coll.WithContext(context.Background()), &got)
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(prepareFloor(t, coll))
			m, err := encode(reg, &want)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("floor differs from scrape:\n--- scrape\n%s\n--- floor\n%s", got.String(), want.String())
			}
			// Every holder has memory total and used, request and limit
			// (and a duty cycle, but MIG instances have none); every
			// device its memory total and used.
			devices := c.GPUs
			if c.Sharing == benchnode.MIG {
				devices += c.GPUs * benchnode.MIGPerGPU
			}
			min := 4*c.Holders() + 2*devices
			if c.API {
				min += 2 * c.Holders() // and each holder's pod its workload, its device the kubelet's health
			}
			if n < min || n != m {
				t.Fatalf("series: scrape %d, floor %d; want equal and at least %d", n, m, min)
			}
		})
	}
}

// BenchmarkScrape times, per case (and again with the Kubernetes API as a
// source, cases *-api), one full scrape with the kubelet reply
// served from the client's cache (exporter), then client_golang alone
// encoding the same series (floor). The two run back to back so that a
// busy machine slows both alike and their ratio holds.
func BenchmarkScrape(b *testing.B) {
	for _, c := range append(benchnode.Cases(), benchnode.APICases()...) {
		n, coll := startCase(b, c, time.Hour, nil)
		b.Run(c.Name+"/exporter", func(b *testing.B) {
			calls, polls := n.Kubelet.Calls(), n.Sampler.Polls()
			ctx := context.Background()
			var buf bytes.Buffer
			series := 0
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if series, err = scrape(ctx, coll.WithContext(ctx), &buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n.Kubelet.Calls() != calls || n.Sampler.Polls() != polls {
				b.Fatalf("scrapes reached a source: kubelet calls %d -> %d, polls %d -> %d", calls, n.Kubelet.Calls(), polls, n.Sampler.Polls())
			}
			b.ReportMetric(float64(series), "series")
			b.ReportMetric(float64(buf.Len()), "bytes")
		})
		b.Run(c.Name+"/floor", func(b *testing.B) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(prepareFloor(b, coll))
			var buf bytes.Buffer
			series := 0
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if series, err = encode(reg, &buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(series), "series")
			b.ReportMetric(float64(buf.Len()), "bytes")
		})
	}
}

// BenchmarkAccount times one accounting step, which the exporter runs once
// per NVML poll off the scrape path: the kubelet call (served from the
// client's cache here: BenchmarkKubeletFetchUncached times the call), the
// join and the energy, GPU-seconds and Xid ledgers. Each iteration takes a
// new poll, since a step on a poll already taken does nothing.
func BenchmarkAccount(b *testing.B) {
	for _, c := range benchnode.Cases() {
		n, coll := startCase(b, c, time.Hour, nil)
		b.Run(c.Name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				n.Sampler.Poll()
				b.StartTimer()
				coll.Account(ctx)
			}
		})
	}
}

// BenchmarkKubeletFetchUncached times one pod-resources round trip with no
// cache: List and GetAllocatableResources over the socket, decoding and
// reduction to GPU containers. The exporter pays it once per NVML poll, in
// its accounting step; scrapes never do.
func BenchmarkKubeletFetchUncached(b *testing.B) {
	for _, c := range benchnode.Cases() {
		b.Run(c.Name, func(b *testing.B) {
			n, _ := startCase(b, c, 0, nil)
			ctx := context.Background()
			calls := n.Kubelet.Calls()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s, err := n.Kubelet.Read(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(s.Containers) != c.Holders() {
					b.Fatalf("containers = %d, want %d", len(s.Containers), c.Holders())
				}
			}
			b.StopTimer()
			if got := n.Kubelet.Calls() - calls; got != uint64(b.N) {
				b.Fatalf("%d kubelet calls for %d fetches: the cache answered", got, b.N)
			}
		})
	}
}

// BenchmarkScrapeExceptionsOnly times one scrape of the 8-GPU whole-GPU
// case with every support flag and clock event reason served (full) and
// with only their exceptions (--metrics.exceptions-only).
func BenchmarkScrapeExceptionsOnly(b *testing.B) {
	n, _ := startCase(b, benchnode.Cases()[0], time.Hour, nil)
	for _, sparse := range []bool{false, true} {
		coll := collector.New(collector.Config{NodeName: "gpu-node-01", NVMLStaleAfter: time.Hour,
			Telemetry: true, Health: true, Events: true, Profiling: true, Chargeback: true, ExceptionsOnly: sparse}, n.Sampler, n.Kubelet, nil)
		name := map[bool]string{false: "full", true: "exceptions-only"}[sparse]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			var buf bytes.Buffer
			series := 0
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if series, err = scrape(ctx, coll.WithContext(ctx), &buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(series), "series")
			b.ReportMetric(float64(buf.Len()), "bytes")
		})
	}
}
