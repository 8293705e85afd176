package statuspage

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

var update = flag.Bool("update", false, "rewrite testdata/page.golden.html")

// fixed serves one literal view, counting the snapshots read.
type fixed struct {
	v     collector.View
	src   []collector.SourceState
	reads int
}

func (f *fixed) Gather(context.Context) (collector.View, collector.Health) {
	f.reads++
	return f.v, collector.Health{}
}
func (f *fixed) Sources(collector.Health) []collector.SourceState { return f.src }

// hostile is a pod name no API server admits, but the kubelet's socket
// passes on whatever it holds.
const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>`

func sampleNode() *fixed {
	g0, g1 := gpu(0, "GPU-0"), gpu(1, "GPU-1")
	g1.MIGEnabled, g1.HasDutyCycle = true, false
	g1.Xid, g1.LastXid = map[uint64]uint64{79: 1}, now.Add(-2*time.Minute)
	vw := view([]nvml.Reading{g0, g1, mig(g1, "MIG-a", "1g.10gb", 1)},
		map[string][][3]string{"GPU-0": {{"ml", "train-0", "main"}}, "MIG-a": {{"team", hostile, "c"}}},
		map[string][2]string{"GPU-0": {"healthy", "none"}, "GPU-1": {"failed", "xid"}})
	vw.Node = []collector.NodeResource{{Resource: "nvidia.com/gpu", Allocatable: 1, HasAllocatable: true}}
	vw.PodRequests = []collector.PodResource{{Namespace: "ml", Pod: "train-0", Resource: "nvidia.com/gpu", Request: 1}}
	return &fixed{v: vw, src: []collector.SourceState{
		{Name: "nvml", Up: true},
		{Name: "kubelet", Up: true, Errors: map[string]uint64{"unavailable": 2}, LastErr: "rpc error: code = Unavailable", LastErrAt: now.Add(-5 * time.Minute)},
		{Name: "kubernetes", Err: "pods is forbidden: <b>no</b>", LastErr: "pods is forbidden: <b>no</b>", LastErrAt: now},
	}}
}

func serve(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func newHandler(src Snapshots) *Handler {
	return New(src, Config{Node: "gpu-node-1", Version: "1.2.3", MetricsPath: "/metrics", Now: func() time.Time { return now }})
}

// TestGoldenPage holds the whole page of one literal node; -update rewrites
// it after a deliberate change.
func TestGoldenPage(t *testing.T) {
	rec := serve(t, newHandler(sampleNode()), "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	golden := filepath.Join("testdata", "page.golden.html")
	if *update {
		if err := os.WriteFile(golden, rec.Body.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Body.Bytes(), want) {
		t.Errorf("page differs from %s (go test -run TestGoldenPage -update to accept):\n%s", golden, rec.Body)
	}
}

// Names from the node's sources are text, never markup, and the page
// forbids scripts should escaping ever fail.
func TestHostileNamesEscaped(t *testing.T) {
	rec := serve(t, newHandler(sampleNode()), "/")
	body := rec.Body.String()
	for _, raw := range []string{"<script", "<img", "<b>"} {
		if strings.Contains(body, raw) {
			t.Errorf("page holds %q unescaped", raw)
		}
	}
	if !strings.Contains(body, "team/&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;/c") {
		t.Errorf("hostile holder not shown as text:\n%s", body)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestRefresh(t *testing.T) {
	src := sampleNode()
	h := newHandler(src)
	for _, tt := range []struct {
		query    string
		code     int
		contains string
	}{
		{"/", 200, `<a href="?refresh=10">`},
		{"/?refresh=15", 200, `<meta http-equiv="refresh" content="15">`},
		{"/?refresh=0", 200, `<a href="?refresh=10">`},
		{"/?refresh=-1", 400, "refresh: want whole seconds"},
		{"/?refresh=3601", 400, "refresh: want whole seconds"},
		{"/?refresh=1%3Burl%3Dhttp://evil", 400, "refresh: want whole seconds"},
		{"/?refresh=abc", 400, "refresh: want whole seconds"},
	} {
		rec := serve(t, h, tt.query)
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.contains) {
			t.Errorf("%s: %d, want %d with %q:\n%s", tt.query, rec.Code, tt.code, tt.contains, rec.Body)
		}
		if tt.code == 200 && tt.query != "/?refresh=15" && strings.Contains(rec.Body.String(), "http-equiv") {
			t.Errorf("%s: refreshes", tt.query)
		}
	}
	// A refused request reads no snapshot.
	if src.reads != 3 {
		t.Errorf("%d snapshots read for 3 pages served", src.reads)
	}
}
