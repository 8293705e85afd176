package dashboards_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// process is a program the test started.
type process struct {
	name string
	done chan struct{}
}

// exited reports, as an error, whether the program has ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited", p.name)
	default:
		return nil
	}
}

// start runs a program in its own process group, logging to logPath, and
// stops the whole group when the test ends.
func start(t *testing.T, logPath, bin string, args ...string) *process {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
		if t.Failed() {
			logTail(t, logPath)
		}
	})
	return &process{name: filepath.Base(bin), done: done}
}

func logTail(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	t.Logf("--- tail of %s ---\n%s", filepath.Base(path), b)
}

// eventually polls cond every 250ms until it returns nil or the timeout
// passes, then fails with cond's last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// promAPI is a minimal client of Prometheus's HTTP API.
type promAPI struct {
	base string
	hc   *http.Client
}

func newPromAPI(addr string) *promAPI {
	return &promAPI{base: "http://" + addr, hc: &http.Client{Timeout: 10 * time.Second}}
}

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (p *promAPI) get(path string, params url.Values, into any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := p.base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, into)
}

// sample is one series of a query result with its values (one for instant
// queries) and, for range queries, their times (Unix seconds).
type sample struct {
	Metric map[string]string
	Values []float64
	Times  []float64
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

func parseValue(pair []any) (float64, error) {
	if len(pair) != 2 {
		return 0, fmt.Errorf("bad sample %v", pair)
	}
	s, ok := pair[1].(string)
	if !ok {
		return 0, fmt.Errorf("bad sample value %v", pair[1])
	}
	return strconv.ParseFloat(s, 64)
}

func (d queryData) samples() ([]sample, error) {
	switch d.ResultType {
	case "scalar":
		var pair []any
		if err := json.Unmarshal(d.Result, &pair); err != nil {
			return nil, err
		}
		v, err := parseValue(pair)
		return []sample{{Values: []float64{v}}}, err
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(d.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]sample, 0, len(vec))
		for _, s := range vec {
			v, err := parseValue(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, sample{Metric: s.Metric, Values: []float64{v}})
		}
		return out, nil
	case "matrix":
		var mat []struct {
			Metric map[string]string `json:"metric"`
			Values [][]any           `json:"values"`
		}
		if err := json.Unmarshal(d.Result, &mat); err != nil {
			return nil, err
		}
		out := make([]sample, 0, len(mat))
		for _, s := range mat {
			sm := sample{Metric: s.Metric}
			for _, pair := range s.Values {
				v, err := parseValue(pair)
				if err != nil {
					return nil, err
				}
				sm.Values = append(sm.Values, v)
				if t, ok := pair[0].(float64); ok {
					sm.Times = append(sm.Times, t)
				}
			}
			out = append(out, sm)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected result type %q", d.ResultType)
}

// query evaluates expr now.
func (p *promAPI) query(expr string) ([]sample, error) {
	var d queryData
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &d); err != nil {
		return nil, err
	}
	return d.samples()
}

// queryRange evaluates expr over the last span with the given step.
func (p *promAPI) queryRange(expr string, span, step time.Duration) ([]sample, error) {
	end := time.Now()
	var d queryData
	err := p.get("/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(end.Add(-span).Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {step.String()},
	}, &d)
	if err != nil {
		return nil, err
	}
	return d.samples()
}

// nonEmpty fails unless a result has a series and every value is a number.
func nonEmpty(ss []sample, err error) error {
	if err != nil {
		return err
	}
	if len(ss) == 0 {
		return fmt.Errorf("empty result")
	}
	for _, s := range ss {
		if len(s.Values) == 0 {
			return fmt.Errorf("series %v has no values", s.Metric)
		}
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("series %v has value %v", s.Metric, v)
			}
		}
	}
	return nil
}

// series lists the series a selector matches.
func (p *promAPI) series(selector string) ([]map[string]string, error) {
	var out []map[string]string
	err := p.get("/api/v1/series", url.Values{
		"match[]": {selector},
		"start":   {strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)},
	}, &out)
	return out, err
}

// labelValues answers a Grafana label_values(selector, label) query the way
// the Prometheus data source does: the label's values among the series the
// selector matches.
func (p *promAPI) labelValues(selector, label string) ([]string, error) {
	var out []string
	err := p.get("/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{
		"match[]": {selector},
		"start":   {strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)},
	}, &out)
	return out, err
}

type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promAPI) alerts() ([]alert, error) {
	var d struct {
		Alerts []alert `json:"alerts"`
	}
	err := p.get("/api/v1/alerts", nil, &d)
	return d.Alerts, err
}

type ruleStatus struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	Type      string `json:"type"`
}

func (p *promAPI) rules() ([]ruleStatus, error) {
	var d struct {
		Groups []struct {
			Name  string       `json:"name"`
			Rules []ruleStatus `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", nil, &d); err != nil {
		return nil, err
	}
	var out []ruleStatus
	for _, g := range d.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// rangeRe matches range and subquery durations: [1h], [30m], [1h:5m].
var rangeRe = regexp.MustCompile(`\[(?:\d+(?:ms|[smhdwy]))+(?::(?:\d+(?:ms|[smhdwy]))*)?\]`)

// shortenRules rewrites a rule file for a test that cannot wait hours: every
// group evaluates each second, and every alert except those in keep has its
// for: cut to forDur and its range windows to window, so that what the
// simulated node should trigger fires within seconds and what it should not
// trigger gets the chance to fire by mistake.
func shortenRules(src []byte, forDur, window string, keep map[string]bool) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	groups, _ := doc["groups"].([]any)
	if len(groups) == 0 {
		return nil, fmt.Errorf("no rule groups")
	}
	for _, g := range groups {
		group, ok := g.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("group is %T", g)
		}
		if _, ok := group["interval"]; ok {
			group["interval"] = "1s"
		}
		rules, _ := group["rules"].([]any)
		for _, r := range rules {
			rule, ok := r.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("rule is %T", r)
			}
			name, isAlert := rule["alert"].(string)
			if !isAlert || keep[name] {
				continue
			}
			if _, ok := rule["for"]; ok {
				rule["for"] = forDur
			}
			expr, _ := rule["expr"].(string)
			rule["expr"] = rangeRe.ReplaceAllStringFunc(expr, func(s string) string {
				if strings.Contains(s, ":") {
					return "[" + window + ":1s]"
				}
				return "[" + window + "]"
			})
		}
	}
	return yaml.Marshal(doc)
}
