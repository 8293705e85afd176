package tooltest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestFreeAddrUnderBindChurn takes ports from many goroutines while others
// bind port 0 as fast as they can, the way a simulated node's API server
// and every outgoing connection do: no address may be handed out twice,
// fall in the kernel's ephemeral range, or be taken when it is handed out.
func TestFreeAddrUnderBindChurn(t *testing.T) {
	rs, err := portRanges()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	for range 4 {
		churn.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
					l.Close()
				}
			}
		})
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var takers sync.WaitGroup
	for range 16 {
		takers.Go(func() {
			for range 16 {
				addr := FreeAddr(t)
				mu.Lock()
				if seen[addr] {
					t.Errorf("%s handed out twice", addr)
				}
				seen[addr] = true
				mu.Unlock()
			}
		})
	}
	takers.Wait()
	close(stop)
	churn.Wait()
	for addr := range seen {
		checkReserved(t, rs, addr)
	}
}

// TestFreeAddrAcrossProcesses holds ports in another test process (go test
// runs packages in parallel) while this one takes its own: none may be
// shared.
func TestFreeAddrAcrossProcesses(t *testing.T) {
	if os.Getenv("TOOLTEST_HOLD_PORTS") != "" {
		n, _ := strconv.Atoi(os.Getenv("TOOLTEST_HOLD_PORTS"))
		for range n {
			os.Stdout.WriteString(FreeAddr(t) + "\n")
		}
		os.Stdout.WriteString("held\n")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold until the parent is done
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreeAddrAcrossProcesses$")
	cmd.Env = append(os.Environ(), "TOOLTEST_HOLD_PORTS=200")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	theirs := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "held" {
		if strings.HasPrefix(sc.Text(), "127.0.0.1:") {
			theirs[sc.Text()] = true
		}
	}
	if len(theirs) != 200 {
		t.Fatalf("the other process took %d ports, want 200", len(theirs))
	}
	for range 200 {
		if addr := FreeAddr(t); theirs[addr] {
			t.Fatalf("%s is held by the other test process and was handed out here too", addr)
		}
	}
}

func checkReserved(t *testing.T, rs [][2]int, addr string) {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	in := false
	for _, r := range rs {
		in = in || (port >= r[0] && port <= r[1])
	}
	if !in {
		t.Errorf("%s lies in the kernel's ephemeral range", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("%s was handed out but cannot be bound: %v", addr, err)
		return
	}
	l.Close()
}
