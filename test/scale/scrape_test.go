package scale

import (
	"fmt"
	"math"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is one series as Prometheus stores it: a summary's quantiles,
// sum and count are series of their own, as are a histogram's buckets.
type sample struct {
	family string
	name   string
	labels map[string]string
	value  float64
}

// key is the series' identity, name{a="x",b="y"} with labels sorted.
func (s sample) key() string {
	var ls []string
	for k, v := range s.labels {
		ls = append(ls, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(ls)
	return s.name + "{" + strings.Join(ls, ",") + "}"
}

type scrape struct{ samples []sample }

func (s *scrape) keys() []string {
	out := make([]string, len(s.samples))
	for i, x := range s.samples {
		out[i] = x.key()
	}
	slices.Sort(out)
	return out
}

// value returns the value of the one series of name whose labels include
// the pairs given (name, value, ...), NaN when there is none.
func (s *scrape) value(name string, pairs ...string) float64 {
	v, n := math.NaN(), 0
next:
	for _, x := range s.samples {
		if x.name != name {
			continue
		}
		for i := 0; i+1 < len(pairs); i += 2 {
			if x.labels[pairs[i]] != pairs[i+1] {
				continue next
			}
		}
		v, n = x.value, n+1
	}
	if n != 1 {
		return math.NaN()
	}
	return v
}

// parse reads a text exposition into its series, and checks that they are
// as many as its sample lines.
func parse(text string) (*scrape, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	sc := &scrape{}
	add := func(fam, name string, m *dto.Metric, v float64, extra ...string) {
		ls := map[string]string{}
		for _, l := range m.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(extra); i += 2 {
			ls[extra[i]] = extra[i+1]
		}
		sc.samples = append(sc.samples, sample{family: fam, name: name, labels: ls, value: v})
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					add(name, name, m, q.GetValue(), "quantile", fmt.Sprint(q.GetQuantile()))
				}
				add(name, name+"_sum", m, m.GetSummary().GetSampleSum())
				add(name, name+"_count", m, float64(m.GetSummary().GetSampleCount()))
			case dto.MetricType_HISTOGRAM:
				inf := false
				for _, b := range m.GetHistogram().GetBucket() {
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					add(name, name+"_bucket", m, float64(b.GetCumulativeCount()), "le", fmt.Sprint(b.GetUpperBound()))
				}
				if !inf {
					add(name, name+"_bucket", m, float64(m.GetHistogram().GetSampleCount()), "le", "+Inf")
				}
				add(name, name+"_sum", m, m.GetHistogram().GetSampleSum())
				add(name, name+"_count", m, float64(m.GetHistogram().GetSampleCount()))
			default:
				add(name, name, m, m.GetGauge().GetValue()+m.GetCounter().GetValue()+m.GetUntyped().GetValue())
			}
		}
	}
	lines := 0
	for l := range strings.SplitSeq(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines++
		}
	}
	if lines != len(sc.samples) {
		return nil, fmt.Errorf("%d sample lines, %d series parsed", lines, len(sc.samples))
	}
	return sc, nil
}
