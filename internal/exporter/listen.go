package exporter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/net/netutil"
)

// listen opens the listeners of --web.listen-address (or systemd's), each
// accepting at most --web.max-connections connections at once. Those over
// the limit wait in the kernel's backlog, where they cost this process no
// memory: --web.max-requests only counts requests that reached the
// handler, so idle or slow connections were otherwise unbounded.
func listen(o *Options) ([]net.Listener, error) {
	var ls []net.Listener
	if o.web.WebSystemdSocket != nil && *o.web.WebSystemdSocket {
		var err error
		if ls, err = activation.Listeners(); err != nil {
			return nil, fmt.Errorf("systemd socket activation: %w", err)
		}
		if len(ls) == 0 {
			return nil, errors.New("--web.systemd-socket: no socket activation file descriptors found")
		}
	}
	if len(ls) == 0 {
		for _, addr := range *o.web.WebListenAddresses {
			l, err := listenOne(addr)
			if err != nil {
				closeAll(ls)
				return nil, fmt.Errorf("--web.listen-address=%s: %w", addr, err)
			}
			ls = append(ls, l)
		}
	}
	if o.maxConns > 0 {
		for i, l := range ls {
			ls[i] = netutil.LimitListener(l, o.maxConns)
		}
	}
	return ls, nil
}

func listenOne(addr string) (net.Listener, error) {
	if !strings.HasPrefix(addr, "vsock://") {
		return net.Listen("tcp", addr)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	_, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("port: %w", err)
	}
	port, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("port: %w", err)
	}
	return vsock.Listen(uint32(port), nil)
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		_ = l.Close()
	}
}

// checkWebConfig reads --web.config.file before serving so that its errors
// name the file, and refuses an empty one: exporter-toolkit would serve it
// as plain HTTP without authentication, which whoever wrote the file
// (often a mount of a missing Secret key) did not mean.
func checkWebConfig(path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--web.config.file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	if len(m) == 0 {
		return fmt.Errorf("--web.config.file %s is empty: it would serve plain HTTP without authentication; leave the flag out to mean that", path)
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	return nil
}

// authGate bounds how many requests carrying credentials not yet seen to
// succeed are inside exporter-toolkit's basic auth at once. The toolkit runs
// bcrypt one request at a time and queues the rest without bound, so a flood
// of wrong passwords delayed every real scrape by the whole queue. Requests
// over the bound get 429 at once; credentials that passed before skip the
// bound (the toolkit still checks them, from its cache). The gate decides
// nothing about authentication itself.
type authGate struct {
	next  http.Handler // exporter-toolkit's handler
	slots chan struct{}

	mu   sync.Mutex
	good map[[sha256.Size]byte]struct{}
}

// maxGoodCredentials bounds the memory of credentials that passed; over it
// the set starts again, which costs those clients one pass through the gate.
const maxGoodCredentials = 64

type passedKey struct{}

func newAuthGate(next http.Handler, concurrent int) *authGate {
	return &authGate{next: next, slots: make(chan struct{}, concurrent), good: map[[sha256.Size]byte]struct{}{}}
}

func credentialKey(user, pass string) [sha256.Size]byte {
	return sha256.Sum256([]byte(strconv.Quote(user) + ":" + pass))
}

func (g *authGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		// No credentials: the toolkit answers 401 without bcrypt.
		g.next.ServeHTTP(w, r)
		return
	}
	key := credentialKey(user, pass)
	g.mu.Lock()
	_, known := g.good[key]
	g.mu.Unlock()
	if known {
		g.next.ServeHTTP(w, r)
		return
	}
	select {
	case g.slots <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many authentication attempts in progress", http.StatusTooManyRequests)
		return
	}
	passed := false
	g.next.ServeHTTP(w, r.WithContext(contextWithPassed(r, &passed)))
	<-g.slots
	if passed {
		g.mu.Lock()
		if len(g.good) >= maxGoodCredentials {
			clear(g.good)
		}
		g.good[key] = struct{}{}
		g.mu.Unlock()
	}
}

func contextWithPassed(r *http.Request, passed *bool) context.Context {
	return context.WithValue(r.Context(), passedKey{}, passed)
}

// markPassed wraps the handler the toolkit calls once a request's
// credentials are accepted, telling the gate so.
func markPassed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := r.Context().Value(passedKey{}).(*bool); ok {
			*p = true
		}
		next.ServeHTTP(w, r)
	})
}

// gateListener installs the gate in front of the handler exporter-toolkit
// set on the server, on the first Accept: web.Serve sets server.Handler
// just before it starts accepting, and connections only read it after
// Accept returns them.
type gateListener struct {
	net.Listener
	once    *sync.Once
	install func()
}

func (l gateListener) Accept() (net.Conn, error) {
	l.once.Do(l.install)
	return l.Listener.Accept()
}
