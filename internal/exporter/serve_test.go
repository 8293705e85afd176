package exporter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// startServe runs serve with args on a free loopback address until the
// test ends and returns the address once it accepts connections.
func startServe(t *testing.T, h http.Handler, args ...string) string {
	t.Helper()
	addr := tooltest.FreeAddr(t)
	o, _, err := Parse(append([]string{"--web.listen-address=" + addr}, args...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, h, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })

// Connections that send one byte and wait are held by the server: beyond
// --web.max-connections they must not be accepted (each would cost memory),
// and once they close the server serves again.
func TestMaxConnectionsBoundsIdleConnections(t *testing.T) {
	addr := startServe(t, okHandler, "--web.max-connections=3")
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("G")); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	time.Sleep(100 * time.Millisecond)  // let the server accept them
	extra, err := net.Dial("tcp", addr) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if _, err := io.WriteString(extra, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := bufio.NewReader(extra).ReadString('\n'); err == nil {
		t.Fatal("a connection over --web.max-connections was served")
	}
	for _, c := range idle {
		c.Close()
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("after the idle connections closed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("after the idle connections closed: %d %q", resp.StatusCode, b)
	}
}

// A flood of wrong passwords must not queue real scrapes behind bcrypt:
// requests with credentials not yet seen to succeed are answered at once
// (429) while a few are being checked, and credentials that succeeded
// before are served.
func TestAuthFloodDoesNotQueueScrapes(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), 10)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfg, []byte("basic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, okHandler, "--web.config.file="+cfg)
	client := &http.Client{Timeout: 30 * time.Second}
	try := func(user, pass string) (int, time.Duration) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.SetBasicAuth(user, pass)
		begin := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return 0, time.Since(begin)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(begin)
	}
	if code, _ := try("prom", "right"); code != http.StatusOK {
		t.Fatalf("right password: %d", code)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() { defer wg.Done(); try("prom", fmt.Sprint("wrong", i)) }()
	}
	time.Sleep(200 * time.Millisecond)
	if code, took := try("other", "new"); took > time.Second {
		t.Errorf("new credentials during the flood answered %d after %v", code, took)
	}
	if code, took := try("prom", "right"); code != http.StatusOK || took > time.Second {
		t.Errorf("right password during the flood: %d after %v", code, took)
	}
	wg.Wait()
}

// A web configuration that cannot be used stops the start with an error
// naming the file; an empty one is refused rather than served as plain HTTP
// without authentication.
func TestWebConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty.yml":    "",
		"comments.yml": "# nothing here\n",
		"bad.yml":      "basic_auth_users:\n  - x\n  y: [\n",
		"unknown.yml":  "basic_auth_user:\n  prom: x\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		o, _, err := Parse([]string{"--web.listen-address=" + tooltest.FreeAddr(t), "--web.config.file=" + path})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = serve(ctx, o, okHandler, slog.New(slog.DiscardHandler))
		cancel()
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
	}
}
