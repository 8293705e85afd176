package handoff

import (
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// TestMain serves "handed over" on the activated socket when run as the
// child of TestHandOver, the way the exporter's --web.systemd-socket does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "--web.systemd-socket" {
		ls, err := activation.Listeners()
		if err != nil || len(ls) != 1 {
			os.Stderr.WriteString("no activated listener\n")
			os.Exit(2)
		}
		srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "handed over")
			go func() { time.Sleep(50 * time.Millisecond); os.Exit(0) }()
		})}
		_ = srv.Serve(ls[0])
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestHandOver checks the child serves on Addr from its first instant and
// that, once it exits, nobody holds the port.
func TestHandOver(t *testing.T) {
	cmd, err := Command(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + cmd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "handed over" {
		t.Fatalf("got %q", body)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if c, err := net.DialTimeout("tcp", cmd.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after the child exited", cmd.Addr)
	}
}
