package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
)

// sourceHealth is one informer's view of the API server. It is healthy only
// while its cache is known to be caught up: after a list (plain, or the
// end bookmark of a streaming list) that followed the last error, and with
// the watch that continues from that list open.
type sourceHealth struct {
	kind     string
	optional bool // a failure must not make the whole source unhealthy (DRA)
	// note ends the WARN line of an optional source's failure: what is
	// missing meanwhile.
	note string

	mu      sync.Mutex
	healthy bool
	// stale is set by any error: the cache may have missed changes, so a
	// watch resumed from its old resource version is refused in favour of a
	// relist, which the reflector would otherwise only do after its backoff.
	stale bool
	// listed is set by a successful plain list: the watch opened next
	// continues from that list, so the cache is caught up once it opens.
	listed  bool
	warned  string // the cause last logged at WARN; reset on recovery
	lastErr error

	listErrors, watchErrors atomic.Uint64
}

func (h *sourceHealth) isHealthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthy
}

func (h *sourceHealth) lastError() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastErr
}

// Retry delays of list and watch requests that failed for a reason that
// passes (a refused connection, a restarting API server). The reflector's
// own backoff grows to 30s during an outage, which would leave a restarted
// API server unread for that long; these requests are retried here instead,
// with a short cap and jitter so that a fleet of exporters does not
// reconnect in step.
const (
	retryBase = 250 * time.Millisecond
	retryCap  = 2 * time.Second
)

func retryDelay(attempt int) time.Duration {
	d := retryCap
	if attempt < 4 {
		d = min(retryBase<<attempt, retryCap)
	}
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errRelist makes the reflector drop a watch it wants to resume and list
// again: it handles an expired resource version by relisting.
func errRelist() error {
	return apierrors.NewResourceExpired("cache may be stale after an error; relisting")
}

// list runs one list request of the reflector, retrying passing failures.
func (w *Watcher) list(ctx context.Context, h *sourceHealth, fn listFunc, opts metav1.ListOptions) (runtime.Object, error) {
	for attempt := 0; ; attempt++ {
		out, err := fn(ctx, opts)
		if err == nil {
			h.mu.Lock()
			h.listed = true
			h.mu.Unlock()
			return out, nil
		}
		if ctx.Err() != nil {
			return out, err
		}
		w.failed(h, "list", err)
		// Returned as is when not retried: the reflector classifies API
		// errors (410, 429) partly by type assertion.
		if !transient(err) || !sleepCtx(ctx, retryDelay(attempt)) {
			return out, err
		}
	}
}

// watch opens one watch of the reflector, retrying passing failures. A
// streaming list (a watch with initial events) counts as a list.
func (w *Watcher) watch(ctx context.Context, h *sourceHealth, fn watchFunc, opts metav1.ListOptions) (watch.Interface, error) {
	initial := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	verb := "watch"
	if initial {
		verb = "list"
	}
	for attempt := 0; ; attempt++ {
		wi, err := fn(ctx, opts)
		if err == nil {
			h.mu.Lock()
			listed, stale := h.listed, h.stale
			h.listed = false
			h.mu.Unlock()
			switch {
			case initial:
				// Caught up at the stream's initial-events-end bookmark.
			case listed:
				w.recovered(h)
			case stale && opts.ResourceVersion != "" && opts.ResourceVersion != "0":
				wi.Stop()
				return nil, errRelist()
			}
			return newTrackedWatch(wi, w, h), nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if initial && !transient(err) {
			// The reflector falls back to a plain list, whose outcome
			// counts: an API server that cannot stream lists is no error,
			// and a denied one is counted and logged once, by the list.
			return nil, err
		}
		w.failed(h, verb, err)
		if !transient(err) || !sleepCtx(ctx, retryDelay(attempt)) {
			return nil, err
		}
	}
}

// recovered marks h caught up.
func (w *Watcher) recovered(h *sourceHealth) {
	h.mu.Lock()
	was := h.healthy
	h.healthy, h.stale, h.warned = true, false, ""
	h.mu.Unlock()
	if !was {
		w.logger.Info("Kubernetes API reachable and cache caught up", "resource", h.kind)
	}
}

// expired marks h stale without counting an error: an expired resource
// version is routine, but the cache is behind until the relist.
func (w *Watcher) expired(h *sourceHealth, err error) {
	h.mu.Lock()
	h.healthy, h.stale = false, true
	h.mu.Unlock()
	w.logger.Debug("watch closed; relisting", "resource", h.kind, "err", err)
}

// failed counts and records a failed request, and logs it at WARN the first
// time its cause is seen since the source was last healthy, so that a
// misconfiguration is visible at the default level without repeating on
// every retry.
func (w *Watcher) failed(h *sourceHealth, verb string, err error) {
	if verb == "list" {
		h.listErrors.Add(1)
	} else {
		h.watchErrors.Add(1)
	}
	cause := Cause(err)
	h.mu.Lock()
	h.healthy, h.stale = false, true
	h.lastErr = fmt.Errorf("%s %s: %w", verb, h.kind, err)
	first := h.warned != cause
	h.warned = cause
	h.mu.Unlock()
	if !first {
		w.logger.Debug("Kubernetes API request failed", "resource", h.kind, "verb", verb, "cause", cause, "err", err)
		return
	}
	attrs := []any{"resource", h.kind, "verb", verb, "cause", cause}
	var msg string
	switch cause {
	case CauseForbidden:
		msg = fmt.Sprintf("Kubernetes API forbids %s on %s: bind the exporter's ServiceAccount to a ClusterRole allowing list and watch on it", verb, h.kind)
		if u := forbiddenUser(err); u != "" {
			attrs = append(attrs, "user", u)
		}
	case CauseUnauthorized:
		msg = "Kubernetes API rejected the exporter's credentials (401): the token is missing, expired or not from this cluster"
	case CauseTLS:
		msg = "TLS with the Kubernetes API failed: check the CA and server name of the kubeconfig or in-cluster configuration"
	case CauseRefused:
		msg = "Kubernetes API refused the connection: not running or wrong address"
	case CauseNotFound:
		msg = fmt.Sprintf("Kubernetes API does not serve %s", h.kind)
	default:
		msg = "Kubernetes API request failed; serving last known state"
	}
	if h.optional {
		msg += h.note
	}
	w.logger.Warn(msg, append(attrs, "err", err)...)
}

// Causes of failed requests, as logged.
const (
	CauseForbidden    = "forbidden"
	CauseUnauthorized = "unauthorized"
	CauseTLS          = "tls"
	CauseRefused      = "connection refused"
	CauseNotFound     = "not found"
	CauseUnreachable  = "unreachable"
	CauseServer       = "server error"
	CauseOther        = "error"
)

// Cause classifies a list or watch error for logs.
func Cause(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		netErr    *net.OpError
	)
	switch {
	case apierrors.IsForbidden(err):
		return CauseForbidden
	case apierrors.IsUnauthorized(err):
		return CauseUnauthorized
	case apierrors.IsNotFound(err):
		return CauseNotFound
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify), errors.As(err, &record):
		return CauseTLS
	case utilnet.IsConnectionRefused(err):
		return CauseRefused
	case errors.As(err, &netErr), utilnet.IsProbableEOF(err), utilnet.IsConnectionReset(err):
		return CauseUnreachable
	case apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err):
		return CauseServer
	}
	return CauseOther
}

// transient reports whether a failure is expected to pass by itself soon
// (the API server is down or restarting), so that a prompt retry is right.
// Permission and configuration errors are left to the reflector's backoff.
func transient(err error) bool {
	switch Cause(err) {
	case CauseRefused, CauseUnreachable, CauseServer:
		return true
	}
	return false
}

var forbiddenUserRE = regexp.MustCompile(`User "([^"]*)"`)

// forbiddenUser is the user a 403 names ("User \"system:serviceaccount:...\"
// cannot list resource ..."): the identity whose RBAC needs fixing.
func forbiddenUser(err error) string {
	if m := forbiddenUserRE.FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return ""
}

// trackedWatch passes a watch's events on to the reflector and watches them
// for what says the cache is behind (an error event, typically an expired
// resource version after an API server restart) or caught up (the end
// bookmark of a streaming list).
type trackedWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func newTrackedWatch(inner watch.Interface, w *Watcher, h *sourceHealth) *trackedWatch {
	t := &trackedWatch{inner: inner, out: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		defer close(t.out)
		for ev := range inner.ResultChan() {
			switch ev.Type {
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					w.expired(h, err)
				} else {
					w.failed(h, "watch", err)
				}
			case watch.Bookmark:
				if m, err := meta.Accessor(ev.Object); err == nil &&
					m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
					w.recovered(h)
				}
			}
			select {
			case t.out <- ev:
			case <-t.stop:
				return
			}
		}
	}()
	return t
}

func (t *trackedWatch) ResultChan() <-chan watch.Event { return t.out }

func (t *trackedWatch) Stop() {
	t.once.Do(func() {
		close(t.stop)
		t.inner.Stop()
	})
}
