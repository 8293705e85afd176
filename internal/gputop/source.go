package gputop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ErrNoSeries is a source that answered without any exporter's series.
var ErrNoSeries = errors.New("no kube-gpu-exporter series")

// Source answers a view's queries.
type Source interface {
	// Fetch answers qs.
	Fetch(ctx context.Context, qs []Query) (Results, error)
	// String names the source for the user.
	String() string
}

// maxBody bounds what is read of one answer (a Prometheus query, an
// exporter's scrape).
const maxBody = 64 << 20

// Prometheus is a Prometheus HTTP API: a URL the user gave, or a service
// reached through the API server's service proxy.
type Prometheus struct {
	// URL is the API's base: the path /api/v1/query is added to it.
	URL    string
	Client *http.Client
	// Name says how it was found, for messages.
	Name string
}

func (p *Prometheus) String() string { return p.Name }

// Fetch runs every query and, for those with a recording, its recorded
// series. A Prometheus holding none of the exporter's series is
// ErrNoSeries: the caller may look elsewhere.
func (p *Prometheus) Fetch(ctx context.Context, qs []Query) (Results, error) {
	r := Results{Vectors: map[string][]Sample{}, Recorded: map[string][]Sample{}}
	total := 0
	for _, q := range qs {
		v, err := p.query(ctx, q.PromQL())
		if err != nil {
			return r, err
		}
		r.Vectors[q.Name] = v
		total += len(v)
		if q.Recorded != nil {
			rec, err := p.query(ctx, q.Recorded.Series+matchers(q.Match))
			if err != nil {
				return r, err
			}
			r.Recorded[q.Name] = rec
		}
	}
	if total == 0 {
		return r, ErrNoSeries
	}
	return r, nil
}

// apiReply is the Prometheus HTTP API's envelope of an instant query.
type apiReply struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func (p *Prometheus) query(ctx context.Context, expr string) ([]Sample, error) {
	u := strings.TrimRight(p.URL, "/") + "/api/v1/query?" + url.Values{"query": {expr}}.Encode()
	body, err := get(ctx, p.Client, u)
	if err != nil {
		return nil, err
	}
	var reply apiReply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, fmt.Errorf("query %s: not a Prometheus API answer: %w", expr, err)
	}
	if reply.Status != "success" {
		return nil, fmt.Errorf("query %s: %s: %s", expr, reply.ErrorType, reply.Error)
	}
	if reply.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %q, want vector", expr, reply.Data.ResultType)
	}
	out := make([]Sample, 0, len(reply.Data.Result))
	for _, s := range reply.Data.Result {
		str, ok := s.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("query %s: value %v is not a string", expr, s.Value[1])
		}
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %q: %w", expr, str, err)
		}
		out = append(out, Sample{Labels: s.Metric, Value: v})
	}
	return out, nil
}

// get reads url's body, failing on any status but 200.
func get(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, msg)
	}
	return body, nil
}

// Scrapes reads the exporters themselves: each URL is one exporter's
// /metrics (through the API server's pod proxy). Every query is answered
// from what they serve now, as Prometheus would answer it from the same
// scrapes; no recorded series exist here.
type Scrapes struct {
	URLs   []string
	Client *http.Client
	Name   string
	// Parallel bounds the scrapes in flight.
	Parallel int
}

func (s *Scrapes) String() string { return s.Name }

// Fetch scrapes every exporter and answers qs. Exporters that fail are
// skipped if some answer; when none does, the first error is returned.
func (s *Scrapes) Fetch(ctx context.Context, qs []Query) (Results, error) {
	series := map[string][]Sample{}
	var mu sync.Mutex
	var errs []error
	ok := 0
	sem := make(chan struct{}, max(s.Parallel, 1))
	var wg sync.WaitGroup
	for _, u := range s.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			got, err := scrape(ctx, s.Client, u)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ok++
			for name, ss := range got {
				series[name] = append(series[name], ss...)
			}
		}()
	}
	wg.Wait()
	r := Results{Vectors: map[string][]Sample{}}
	for _, err := range errs {
		r.Missed = append(r.Missed, err.Error())
	}
	slices.Sort(r.Missed)
	if ok == 0 {
		if len(errs) > 0 {
			return r, errors.Join(errs...)
		}
		return r, ErrNoSeries
	}
	total := 0
	for _, q := range qs {
		r.Vectors[q.Name] = q.Eval(series)
		total += len(r.Vectors[q.Name])
	}
	if total == 0 {
		return r, ErrNoSeries
	}
	return r, nil
}

// scrape reads one exporter's text exposition.
func scrape(ctx context.Context, client *http.Client, u string) (map[string][]Sample, error) {
	body, err := get(ctx, client, u)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	out := map[string][]Sample{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			out[name] = append(out[name], Sample{Labels: labels, Value: v})
		}
	}
	return out, nil
}
