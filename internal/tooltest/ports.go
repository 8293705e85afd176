package tooltest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// FreeAddr returns a loopback address for a server process a test starts
// (Prometheus, etcd, the API server, the kubelet). Its port is one the
// kernel never hands out by itself and no other caller of FreeAddr, in this
// test process or in any other, gets while this process lives.
//
// A port taken from the kernel (listen on port 0, close, pass the number
// on) is free only until the next bind to port 0 or outgoing connection on
// the machine, which may be given the same number before the process meant
// to have it listens: the exporter on a simulated node lost its address to
// the node's own API server that way. So the port comes from outside the
// kernel's ephemeral range (ip_local_port_range), and a lock file held for
// the life of the test process keeps it from every other test process.
// Exporters need none of this: StartExporter hands them a listener.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := reservePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// reserved holds the locks of the ports this process handed out; closing a
// file would release its port, so they stay open until the process exits.
var reserved struct {
	mu    sync.Mutex
	files []*os.File
}

// portRanges are the ports outside the kernel's ephemeral range, from 10000
// (below, ports of well-known services are common) to 65535.
func portRanges() ([][2]int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return nil, fmt.Errorf("ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return nil, fmt.Errorf("ephemeral port range: %q", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("ephemeral port range %q: %w", b, err)
	}
	var rs [][2]int
	if lo > 11000 {
		rs = append(rs, [2]int{10000, lo - 1})
	}
	if hi < 64535 {
		rs = append(rs, [2]int{hi + 1, 65535})
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("ephemeral port range %d-%d leaves no 1000 ports for tests", lo, hi)
	}
	return rs, nil
}

func reservePort() (string, error) {
	rs, err := portRanges()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "kube-gpu-exporter-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("port locks: %w", err)
	}
	n := 0
	for _, r := range rs {
		n += r[1] - r[0] + 1
	}
	// Start anywhere, so that parallel test processes rarely try the same
	// ports, and walk on from there.
	start := rand.IntN(n)
	for i := range n {
		if addr, ok := tryPort(dir, nthPort(rs, (start+i)%n)); ok {
			return addr, nil
		}
	}
	return "", errors.New("no free port outside the ephemeral range")
}

func nthPort(rs [][2]int, i int) int {
	for _, r := range rs {
		if size := r[1] - r[0] + 1; i >= size {
			i -= size
		} else {
			return r[0] + i
		}
	}
	panic("port index out of range")
}

// tryPort takes port p if no other test process holds its lock and nothing
// on the machine listens on it.
func tryPort(dir string, p int) (string, bool) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false
	}
	// flock belongs to the open file, so a second FreeAddr in this process
	// is refused the same port as another process would be.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return "", false
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		f.Close() // also releases the lock
		return "", false
	}
	l.Close()
	reserved.mu.Lock()
	reserved.files = append(reserved.files, f)
	reserved.mu.Unlock()
	return addr, true
}
