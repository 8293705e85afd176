package exporter

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/benchnode"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// testHandler serves the smallest benchmark node, which calls its kubelet
// on every scrape, logging at debug level into the returned buffer.
func testHandler(t *testing.T) (http.Handler, *testkit.LogBuffer) {
	t.Helper()
	log := &testkit.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return startHandler(t, benchnode.Cases()[0], 0, logger), log
}

func get(t *testing.T, h http.Handler, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	return rec
}

// brokenWriter is a client that went away after the first bytes.
type brokenWriter struct {
	header http.Header
	writes int
}

func (b *brokenWriter) Header() http.Header { return b.header }
func (b *brokenWriter) WriteHeader(int)     {}
func (b *brokenWriter) Write(p []byte) (int, error) {
	b.writes++
	if b.writes > 1 {
		return 0, errors.New("write: broken pipe")
	}
	return len(p), nil
}

// A scrape whose client went away is one debug line and one count, not an
// error line per metric family.
func TestWriteErrorsLoggedOncePerRequest(t *testing.T) {
	h, log := testHandler(t)
	for range 3 {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		h.ServeHTTP(&brokenWriter{header: http.Header{}}, req)
	}
	if n := strings.Count(log.String(), "\n"); n > 3 || strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("%d log lines for 3 failed scrapes:\n%s", n, log)
	}
	body := get(t, h, nil).Body.String()
	if !strings.Contains(body, "kube_gpu_exporter_http_write_errors_total 3\n") {
		t.Errorf("kube_gpu_exporter_http_write_errors_total is not 3:\n%s", grepLines(body, "write_errors"))
	}
}

// A client refusing every encoding promhttp has is served uncompressed,
// without an error line.
func TestAcceptEncodingIdentityRefusedIsNoError(t *testing.T) {
	h, log := testHandler(t)
	rec := get(t, h, http.Header{"Accept-Encoding": {"identity;q=0"}})
	if !strings.Contains(rec.Body.String(), "kube_gpu_exporter_up") {
		t.Errorf("no metrics served:\n%s", rec.Body)
	}
	if strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("error logged:\n%s", log)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A scrape timeout too large for a time.Duration must not turn into a
// deadline in the past, which reported the kubelet down on every scrape.
func TestHugeScrapeTimeoutIsClamped(t *testing.T) {
	h, _ := testHandler(t)
	for _, v := range []string{"1.1e10", "1e300", "+Inf", "10"} {
		body := get(t, h, http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {v}}).Body.String()
		if !strings.Contains(body, `kube_gpu_exporter_up{source="kubelet"} 1`) {
			t.Errorf("timeout %s: %s", v, grepLines(body, "kube_gpu_exporter_up"))
		}
	}
}
