// Package podresources reads which devices the kubelet handed to which
// container, through the kubelet's pod-resources gRPC socket.
//
// The kubelet rate-limits that socket for all of its clients together
// (100 requests/s, burst 10), so the Client keeps one connection open for
// its whole life, lets concurrent scrapes share one in-flight call, and may
// reuse a result for a short time.
package podresources

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// DefaultSocket is where the kubelet serves pod-resources.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// Config holds the Client's settings.
type Config struct {
	// Socket is the path of the kubelet's pod-resources unix socket.
	Socket string
	// MaxRecvMsgSize bounds a reply; large nodes exceed gRPC's 4 MiB default.
	MaxRecvMsgSize int
	// Timeout bounds every call.
	Timeout time.Duration
	// CacheTTL is how long a reply may be reused by later scrapes.
	CacheTTL time.Duration
	// Matcher selects the GPU resources; other devices are dropped on arrival.
	Matcher *resource.Matcher
	// DRADrivers are the Dynamic Resource Allocation drivers whose claimed
	// devices are GPUs; claims of other drivers are dropped on arrival. nil
	// means resource.DefaultDRADrivers(); an empty, non-nil list reads no claims.
	DRADrivers []string
	// RestartGrace is how long a reply shaped like a restarting kubelet's
	// (no pods, or no GPU allocatable, where there were some) is answered
	// with the last one before it. Zero believes every reply.
	RestartGrace time.Duration
}

// ContainerClaim is one device a container got through a ResourceClaim: the
// driver, pool and device name identify it in the node's ResourceSlices.
type ContainerClaim struct {
	Namespace, Pod, Container string
	// ClaimName is the ResourceClaim the device was allocated to.
	ClaimName            string
	Driver, Pool, Device string
}

// ContainerDevices is one container's devices of one GPU resource.
type ContainerDevices struct {
	Namespace, Pod, Container, Resource string
	DeviceIDs                           []string
}

// Snapshot is what the kubelet said in one List and GetAllocatableResources
// round, already reduced to GPU resources.
type Snapshot struct {
	Containers []ContainerDevices
	// Claims are the GPU devices containers got through DRA claims, one
	// entry per container and device.
	Claims []ContainerClaim
	// Allocatable maps a GPU resource to the device IDs the kubelet can hand out.
	Allocatable map[string][]string
	// Dropped counts container entries skipped as malformed, by reason.
	Dropped map[string]int
	// DroppedAllocatable counts allocatable device IDs skipped as empty,
	// malformed or repeated, by reason: kept apart from Dropped, whose
	// entries are containers.
	DroppedAllocatable map[string]int
	// Pods counts the pods the kubelet listed, GPU holders or not: a
	// restarting kubelet lists none for a moment (see settle).
	Pods int
	// Taken is when the kubelet answered.
	Taken time.Time
}

// Client talks to the kubelet over one long-lived gRPC connection.
type Client struct {
	cfg  Config
	conn *grpc.ClientConn
	api  podresourcesv1.PodResourcesListerClient
	now  func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	last  *Snapshot
	// believed is the last reply not taken for a restarting kubelet's,
	// and suspectSince when the replies began to look like one.
	believed     *Snapshot
	suspectSince time.Time

	calls  atomic.Uint64
	errMu  sync.Mutex
	errors map[string]uint64
}

// New creates a Client. It does not wait for the socket: gRPC connects in
// the background and reconnects by itself after a kubelet restart, so a
// missing socket at start is an error of the first calls, not of New.
func New(cfg Config) (*Client, error) {
	if cfg.Socket == "" {
		return nil, errors.New("pod-resources socket path is empty")
	}
	// gRPC reads "unix://fk/rel.sock" as authority "fk" and never
	// connects: resolve a relative path against the working directory now.
	sock, err := filepath.Abs(cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("pod-resources socket %q: %w", cfg.Socket, err)
	}
	cfg.Socket = sock
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = 64 << 20
	}
	if cfg.Matcher == nil {
		cfg.Matcher = resource.MustMatcher(resource.DefaultNVIDIA...)
	}
	if cfg.DRADrivers == nil {
		cfg.DRADrivers = resource.DefaultDRADrivers()
	}
	conn, err := grpc.NewClient("unix://"+cfg.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
		// The default backoff grows to two minutes; a kubelet restart takes
		// seconds, and container metrics should come back as fast.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("pod-resources client for %s: %w", cfg.Socket, err)
	}
	return &Client{
		cfg:    cfg,
		conn:   conn,
		api:    podresourcesv1.NewPodResourcesListerClient(conn),
		now:    time.Now,
		errors: map[string]uint64{},
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Calls returns how many kubelet round trips the Client has made; tests and
// benchmarks use it to show that scrapes share calls.
func (c *Client) Calls() uint64 { return c.calls.Load() }

// Errors returns the cumulative error counts by reason.
func (c *Client) Errors() map[string]uint64 {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	out := make(map[string]uint64, len(c.errors))
	for k, v := range c.errors {
		out[k] = v
	}
	return out
}

// claimKey orders a container's claimed devices by driver, pool and device.
// None of the three contains a NUL byte, so the joined key orders like the
// triple.
func claimKey(c *ContainerClaim) string { return c.Driver + "\x00" + c.Pool + "\x00" + c.Device }

func (c *Client) countError(reason string, n int) {
	c.errMu.Lock()
	c.errors[reason] += uint64(n)
	c.errMu.Unlock()
}

// Read returns the kubelet's current view. A reply younger than CacheTTL is
// reused; otherwise concurrent callers share one round trip. The round trip
// runs under the Client's own timeout, so one scrape giving up does not fail
// the others; each caller still stops waiting when its ctx ends.
func (c *Client) Read(ctx context.Context) (*Snapshot, error) {
	if s := c.cached(); s != nil {
		return s, nil
	}
	ch := c.group.DoChan("fetch", func() (any, error) {
		// A shared call that ended between our cache check and this one
		// has already refreshed the cache.
		if s := c.cached(); s != nil {
			return s, nil
		}
		s, err := c.fetch(context.Background())
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.last = s
		c.mu.Unlock()
		return s, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Snapshot), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for pod-resources: %w", ctx.Err())
	}
}

// cached returns the last reply while it is younger than CacheTTL, or nil.
func (c *Client) cached() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && c.now().Sub(c.last.Taken) < c.cfg.CacheTTL {
		return c.last
	}
	return nil
}

func (c *Client) fetch(ctx context.Context) (*Snapshot, error) {
	c.calls.Add(1)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	list, err := c.api.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		c.countError(errorReason(err), 1)
		return c.failed(fmt.Errorf("list pod resources: %w", err))
	}
	alloc, err := c.api.GetAllocatableResources(ctx, &podresourcesv1.AllocatableResourcesRequest{})
	if err != nil {
		c.countError(errorReason(err), 1)
		return c.failed(fmt.Errorf("get allocatable resources: %w", err))
	}
	s := Convert(list, alloc, c.cfg.Matcher)
	s.Claims = ConvertClaims(list, c.cfg.DRADrivers, s.Dropped)
	s.Taken = c.now()
	for _, dropped := range []map[string]int{s.Dropped, s.DroppedAllocatable} {
		for reason, n := range dropped {
			c.countError(reason, n)
		}
	}
	return c.settle(s), nil
}

// errorReason turns a gRPC failure into a short, bounded label value.
func errorReason(err error) string {
	switch status.Code(err) {
	case codes.DeadlineExceeded:
		return "timeout"
	case codes.Unavailable:
		return "unavailable"
	case codes.ResourceExhausted:
		// gRPC reports a reply over MaxRecvMsgSize with the same code as
		// the kubelet's rate limiter; the remedies differ (raise
		// --kubelet.max-recv-msg-size, or find the other clients).
		if strings.Contains(status.Convert(err).Message(), "larger than max") {
			return "message_too_large"
		}
		return "rate_limited"
	case codes.Unimplemented:
		return "unimplemented"
	case codes.Canceled:
		return "canceled"
	default:
		return "rpc_error"
	}
}
