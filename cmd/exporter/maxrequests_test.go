package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// slowReader is a scrape from a client that sends its request and then
// reads nothing past the status line, as a stuck or hostile client does:
// with its receive buffer at the kernel's minimum, a scrape larger than the
// socket buffers holds its handler in the response write.
type slowReader struct {
	conn   net.Conn
	status int
}

func startSlowReader(t *testing.T, addr string) *slowReader {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	return &slowReader{conn: conn}
}

// readStatus reads the status line's code, and nothing more.
func (s *slowReader) readStatus() error {
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len("HTTP/1.1 200"))
	if _, err := io.ReadFull(s.conn, buf); err != nil {
		return err
	}
	_, err := fmt.Sscanf(string(buf), "HTTP/1.1 %d", &s.status)
	return err
}

// TestMaxRequestsCap holds scrapes in flight with clients that do not read
// their answers: with --web.max-requests=3, three are admitted and stay in
// their response writes, and the rest are turned away with 503 at once
// instead of queueing behind them; when the held ones go, scrapes are
// admitted again. Scrapes call no source (the kubelet is read by the
// accounting loop), so a slow client is what holds a scrape now.
func TestMaxRequestsCap(t *testing.T) {
	t.Parallel()
	const limit, n = 3, 12
	// Enough containers that a scrape (about 3 MiB) outgrows what the
	// kernel buffers between the exporter and a client reading nothing
	// (the exporter's send buffer on loopback starts at about 1.3 MiB).
	k := newTestKubelet(8, 1500)
	sock := serveKubelet(t, k)
	e := launch(t, plainReady, "--simulate.scenario="+gpuOnlyScenario(t, 8), "--kubelet.pod-resources-socket="+sock,
		fmt.Sprintf("--web.max-requests=%d", limit))
	if size := len(scrape(t, e.Addr)); size < 2<<20 {
		t.Fatalf("a scrape is %d bytes: too small to hold a writer behind the socket buffers", size)
	}
	var held []*slowReader
	for i := 0; i < limit; i++ {
		r := startSlowReader(t, e.Addr)
		if err := r.readStatus(); err != nil || r.status != http.StatusOK {
			t.Fatalf("held scrape %d: status %d, %v", i, r.status, err)
		}
		held = append(held, r)
	}
	// The held scrapes are still writing: every further one is refused.
	for i := limit; i < n; i++ {
		begin := time.Now()
		r := startSlowReader(t, e.Addr)
		if err := r.readStatus(); err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("scrape %d with %d held: status %d, want 503", i, limit, r.status)
		}
		if took := time.Since(begin); took > 2*time.Second {
			t.Errorf("a refused scrape waited %v for its 503", took)
		}
	}
	for _, r := range held {
		r.conn.Close()
	}
	// Until the held handlers see their clients gone, a scrape may still
	// be refused: those count too.
	var body string
	refused := n - limit
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + e.Addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				body = string(b)
				break
			}
			if resp.StatusCode == http.StatusServiceUnavailable {
				refused++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scrape admitted 10s after the held ones went: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The refused scrapes are counted, as node_exporter counts them.
	if want := fmt.Sprintf(`promhttp_metric_handler_requests_total{code="503"} %d`, refused); !strings.Contains(body, want) {
		t.Errorf("want %s in:\n%s", want, body)
	}
}
