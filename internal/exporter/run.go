package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/client-go/rest"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Sources is where a command's data comes from. The production command
// gives the real NVML only; a simulated node also gives its own socket,
// API server, procfs and name. Empty fields leave the flags' values.
type Sources struct {
	// NVML is the NVML library: gonvml.New() or a simulated node's.
	NVML gonvml.Interface
	// Socket, when set, replaces --kubelet.pod-resources-socket.
	Socket string
	// RESTConfig, when set, is used instead of --kubeconfig or the
	// in-cluster configuration.
	RESTConfig *rest.Config
	// Procfs, when set, replaces --path.procfs.
	Procfs string
	// NodeName is used when --kube.node-name (NODE_NAME) is not set; the
	// hostname when it is empty too.
	NodeName string
	// DRADrivers are DRA drivers the source is known to use: they are read
	// (and DRA enabled) in addition to --dra.driver, since their claims
	// would otherwise go unreported.
	DRADrivers []string
}

// Run wires the sources, the collector and the HTTP server, and blocks
// until ctx ends or the server fails. o is not changed.
func Run(ctx context.Context, o *Options, src Sources, logger *slog.Logger) error {
	logger.Info("starting "+Name, "version", version.Info(), "build_context", version.BuildContext())
	matcher, err := resource.NewMatcher(o.resources)
	if err != nil {
		return fmt.Errorf("--gpu.resource: %w", err)
	}
	o, err = o.with(src, logger)
	if err != nil {
		return err
	}
	// Cancelled on every return, so that the informers stop also when the
	// server fails.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	nvcfg := nvml.Config{
		Window: o.window, Interval: o.pollInterval, RetryInterval: o.retryInterval, Logger: logger,
		Processes: o.perProcess,
		Telemetry: o.collectTelemetry, Health: o.collectHealth, Events: o.collectEvents, Profiling: o.collectProfiling,
	}
	var owners collector.OwnerSource
	if o.perProcess {
		// GPU processes' cgroups are read after each NVML poll, off the
		// scrape path.
		resolver := cgroup.NewResolver(cgroup.Reader{Root: o.procfs})
		nvcfg.AfterPoll = resolver.Update
		owners = resolver
	}
	sampler := nvml.NewSampler(src.NVML, nvcfg)
	sampler.Poll() // the first scrape already has devices
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); sampler.Run(ctx) }()

	draDrivers := []string{} // no claims read
	if o.draEnabled {
		draDrivers = o.draDrivers
	}
	if lim := debug.SetMemoryLimit(-1); lim != math.MaxInt64 && o.maxRecv*recvCostPerByte > lim {
		// A reply of that size would be decoded, not refused, and the
		// process killed for its memory.
		logger.Warn("--kubelet.max-recv-msg-size allows kubelet replies larger than GOMEMLIMIT can decode",
			"max_recv_bytes", o.maxRecv, "decode_bytes", o.maxRecv*recvCostPerByte, "gomemlimit_bytes", lim)
	}
	kubelet, err := podresources.New(podresources.Config{
		Socket: o.socket, MaxRecvMsgSize: int(o.maxRecv), Timeout: o.kubeletTimeout, CacheTTL: o.cacheTTL, Matcher: matcher,
		RestartGrace: o.restartGrace,
		DRADrivers:   draDrivers,
	})
	if err != nil {
		return fmt.Errorf("pod-resources client: %w", err)
	}
	defer kubelet.Close()

	var specs collector.SpecSource = kube.Unavailable{Reason: errors.New("the Kubernetes API is not in use")}
	if w := startWatcher(ctx, o, src.RESTConfig, matcher, logger); w != nil {
		specs = w // a nil *kube.Watcher must not become a non-nil interface
		defer stopWatcher(cancel, w, logger)
	}

	coll := collector.New(collector.Config{
		NodeName: o.nodeName, Matcher: matcher, Logger: logger,
		NVMLStaleAfter: 3*o.pollInterval + 10*time.Second,
		PerProcess:     o.perProcess, Owners: owners,
		Telemetry: o.collectTelemetry, Health: o.collectHealth, Events: o.collectEvents, Profiling: o.collectProfiling,
		Chargeback: o.collectChargeback, ExceptionsOnly: o.exceptionsOnly,
	}, sampler, kubelet, specs)

	// Energy, GPU-seconds and Xid events are accounted at the sampler's
	// pace, off the scrape path, and the kubelet is read there once per
	// poll; scrapes only read. The first step runs before serving, so the
	// first scrape already has the kubelet's answer.
	coll.Account(ctx)
	accountDone := make(chan struct{})
	go func() { defer close(accountDone); coll.Run(ctx, o.pollInterval/2) }()

	handler, err := NewHandler(o, coll, logger)
	if err != nil {
		return err
	}
	if err := serve(ctx, o, handler, logger); err != nil {
		return err
	}
	for name, done := range map[string]chan struct{}{"NVML poll": samplerDone, "accounting step": accountDone} {
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			logger.Warn(name + " still running at exit; not waiting for it")
		}
	}
	return nil
}

// with returns a copy of o with the sources' overrides and defaults
// applied and the node name settled.
func (o *Options) with(src Sources, logger *slog.Logger) (*Options, error) {
	c := *o
	c.draDrivers = slices.Clone(o.draDrivers)
	for _, d := range src.DRADrivers {
		if !c.draEnabled || !slices.Contains(c.draDrivers, d) {
			c.draEnabled = true
			if !slices.Contains(c.draDrivers, d) {
				c.draDrivers = append(c.draDrivers, d)
			}
			logger.Info("the source has a DRA driver: DRA enabled", "driver", d)
		}
	}
	if src.Socket != "" {
		c.socket = src.Socket
	}
	if src.Procfs != "" {
		c.procfs = src.Procfs
	}
	if c.nodeName == "" {
		c.nodeName = src.NodeName
	}
	if c.nodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --kube.node-name and no hostname: %w", err)
		}
		c.nodeName = h
		logger.Warn("--kube.node-name (NODE_NAME) not set; using the hostname", "node", h)
	}
	return &c, nil
}

// startWatcher starts the Kubernetes informers, or returns nil (with one log
// line saying why) when the API is disabled or not configured: requests,
// limits, capacity and allocatable then come from the kubelet and NVML.
func startWatcher(ctx context.Context, o *Options, cfg *rest.Config, m *resource.Matcher, logger *slog.Logger) *kube.Watcher {
	if !o.kubeEnabled {
		logger.Info("Kubernetes API disabled (--no-kube.enabled): requests, limits, capacity and allocatable come from the kubelet and NVML")
		return nil
	}
	if cfg == nil {
		var err error
		if cfg, err = kube.RESTConfig(o.kubeconfig); err != nil {
			logger.Warn("Kubernetes API not available: requests, limits, capacity and allocatable come from the kubelet and NVML", "err", err)
			return nil
		}
	}
	client, err := kube.NewClient(cfg)
	if err != nil {
		logger.Warn("Kubernetes client", "err", err)
		return nil
	}
	w := kube.NewWatcher(client, kube.Config{NodeName: o.nodeName, Matcher: m, DRA: o.draEnabled, DRADrivers: o.draDrivers}, logger)
	w.Start(ctx)
	// Give the informers a moment so the first scrape already has specs;
	// until they sync, the kubelet/NVML fallback serves.
	syncCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if !w.WaitForSync(syncCtx) {
		logger.Info("Kubernetes informers not synced yet; serving kubelet/NVML-derived values until they are")
	}
	return w
}

// stopWatcher cancels the informers' context and waits for them, for a
// bounded time: an exit must not hang on an unreachable API server.
func stopWatcher(cancel context.CancelFunc, w *kube.Watcher, logger *slog.Logger) {
	cancel()
	done := make(chan struct{})
	go func() { defer close(done); w.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		logger.Warn("Kubernetes informers still running at exit; not waiting for them")
	}
}

// authSlots is how many requests with credentials not yet seen to succeed
// may be inside exporter-toolkit's basic auth at once (see authGate).
const authSlots = 4

// shutdownKey holds, in every request's context, the context that ends when
// shutdown starts: a scrape cut by shutdown is then told from a failing
// source.
type shutdownKey struct{}

// serve runs the HTTP servers, one per listener, until ctx ends (then shuts
// them down) or one fails.
func serve(ctx context.Context, o *Options, handler http.Handler, logger *slog.Logger) error {
	if err := checkWebConfig(*o.web.WebConfigFile); err != nil {
		return err
	}
	ls, err := listen(o)
	if err != nil {
		return err
	}
	// Scrapes still waiting on a source when shutdown starts are cancelled
	// rather than waited for.
	serveCtx, cancelServe := context.WithCancel(context.Background())
	defer cancelServe()
	base := context.WithValue(serveCtx, shutdownKey{}, serveCtx)
	servers := make([]*http.Server, len(ls))
	serveErr := make(chan error, len(ls))
	for i, l := range ls {
		srv := &http.Server{
			BaseContext:       func(net.Listener) context.Context { return base },
			Handler:           markPassed(handler),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
		}
		servers[i] = srv
		gl := gateListener{Listener: l, once: new(sync.Once), install: func() {
			srv.Handler = newAuthGate(srv.Handler, authSlots)
		}}
		go func() { serveErr <- web.Serve(gl, srv, o.web, logger) }()
	}

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	cancelServe()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		if e := srv.Shutdown(shutdownCtx); e != nil {
			logger.Warn("shutdown", "err", e)
		}
	}
	return err
}
