// Package handoff starts an exporter on a loopback listener opened before
// the process starts, handed over the way systemd's socket activation does
// (--web.systemd-socket: the socket as file descriptor 3, LISTEN_FDS and
// LISTEN_PID). The port is never free between choosing it and serving on
// it, as a number passed in --web.listen-address would be: any other bind
// on the machine (the simulated node's own API server, an outgoing
// connection) could be given it first.
package handoff

import (
	"fmt"
	"net"
	"os"
	"os/exec"
)

// Cmd is an exporter command that will serve on Addr.
type Cmd struct {
	*exec.Cmd
	// Addr is the loopback address of the handed-over listener.
	Addr string

	sock *os.File
}

// Command returns bin with --web.systemd-socket and args, to serve on a new
// loopback listener. Set Env by appending to it, then Start.
func Command(bin string, args ...string) (*Cmd, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	sock, err := l.(*net.TCPListener).File()
	l.Close() // sock holds the socket on
	if err != nil {
		return nil, fmt.Errorf("listener file: %w", err)
	}
	// LISTEN_PID must name the exporter's own process: the shell sets it to
	// its PID and execs the exporter in its place.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `export LISTEN_PID=$$; exec "$0" "$@"`, bin, "--web.systemd-socket"}, args...)...)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{sock}
	return &Cmd{Cmd: cmd, Addr: l.Addr().String(), sock: sock}, nil
}

// Start starts the process and gives up this process's hold on the socket:
// once the exporter exits, connections must be refused, not queued for a
// listener nobody serves.
func (c *Cmd) Start() error {
	err := c.Cmd.Start()
	c.sock.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", c.Args[2], err)
	}
	return nil
}
