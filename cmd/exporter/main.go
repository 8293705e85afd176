// Command kube-gpu-exporter serves per-container and per-node GPU metrics
// (the Container Insights GPU metric set) for one Kubernetes node, from NVML,
// the kubelet's pod-resources socket and, when available, the Kubernetes API.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/client-go/rest"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

const name = "kube-gpu-exporter"

// defaultAddress is not a port any well-known exporter uses (node_exporter
// 9100, dcgm-exporter 9400, nvidia_gpu_exporter 9835, ...).
const defaultAddress = ":9871"

// options is everything the flags set; it is passed down, never read globally.
type options struct {
	web            *web.FlagConfig
	metricsPath    string
	maxRequests    int
	nodeName       string
	clusterName    string
	clusterID      string
	socket         string
	maxRecv        int64
	kubeletTimeout time.Duration
	cacheTTL       time.Duration
	window         time.Duration
	pollInterval   time.Duration
	retryInterval  time.Duration
	resources      []string
	simulate       bool
	scenario       string
	pprof          bool
	kubeEnabled    bool
	kubeconfig     string
	perProcess     bool
	procfs         string
	draEnabled     bool
	draDrivers     []string
	log            *promslog.Config
}

func parseFlags(args []string) (*options, *kingpin.Application, error) {
	app := kingpin.New(name, "Prometheus exporter of per-container and per-node GPU usage, requests, limits, capacity and allocatable for Kubernetes nodes.")
	o := &options{log: &promslog.Config{}}
	o.web = kingpinflag.AddFlags(app, defaultAddress)
	app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").StringVar(&o.metricsPath)
	intFlag(app, "web.max-requests", "Maximum number of concurrent scrape requests; 0 disables the limit.", "40", &o.maxRequests)
	app.Flag("kube.node-name", "Name of this node: the node label of every series.").Envar("NODE_NAME").StringVar(&o.nodeName)
	app.Flag("cluster.name", "If set, adds a cluster_name label with this value to every series.").Default("").StringVar(&o.clusterName)
	app.Flag("cluster.id", "If set, adds a cluster_id label with this value to every series.").Default("").StringVar(&o.clusterID)
	app.Flag("kubelet.pod-resources-socket", "Path of the kubelet's pod-resources socket.").Default(podresources.DefaultSocket).StringVar(&o.socket)
	bytesFlag(app, "kubelet.max-recv-msg-size", "Largest pod-resources reply accepted (large nodes exceed gRPC's 4MiB default).", "64MiB", &o.maxRecv)
	durationFlag(app, "kubelet.timeout", "Timeout of every pod-resources call.", "5s", &o.kubeletTimeout)
	durationFlag(app, "kubelet.cache-ttl", "How long a pod-resources reply is reused by later scrapes (the kubelet rate-limits the socket for all clients).", "1s", &o.cacheTTL)
	durationFlag(app, "nvml.duty-cycle-window", "Window over which the GPU duty cycle is averaged.", "60s", &o.window)
	durationFlag(app, "nvml.poll-interval", "How often NVML is polled for samples and memory (NVML keeps about 16s of samples).", "2s", &o.pollInterval)
	durationFlag(app, "nvml.init-retry-interval", "How often NVML initialisation is retried while no driver is found.", "30s", &o.retryInterval)
	app.Flag("gpu.resource", "Extended resource counted as a GPU; repeatable; a trailing * matches a prefix; =vendor overrides the vendor label.").
		Default(resource.DefaultAll...).StringsVar(&o.resources)
	app.Flag("kube.enabled", "Read GPU requests, limits, capacity and allocatable from the Kubernetes API (pods and the Node of --kube.node-name); --no-kube.enabled derives them from the kubelet and NVML.").Default("true").BoolVar(&o.kubeEnabled)
	app.Flag("kubeconfig", "Kubeconfig file for running outside a cluster; in-cluster configuration when empty.").Envar("KUBECONFIG").StringVar(&o.kubeconfig)
	app.Flag("nvml.per-process", "Collect per-process GPU data to give each container sharing a GPU (time-slicing, MPS) its own numbers; needs the host's /proc (--path.procfs) and the Kubernetes API.").Default("true").BoolVar(&o.perProcess)
	app.Flag("path.procfs", "Where the host's procfs is mounted; GPU processes' cgroups are read there to find their container.").Default("/proc").StringVar(&o.procfs)
	app.Flag("dra.enabled", "Report GPUs allocated through Dynamic Resource Allocation claims: read claims from the kubelet and this node's ResourceSlices (resource.k8s.io/v1; needs get, list and watch on resourceslices).").Default("false").BoolVar(&o.draEnabled)
	app.Flag("dra.driver", "DRA driver whose devices are GPUs; repeatable.").Default(resource.DefaultDRADrivers()...).StringsVar(&o.draDrivers)
	app.Flag("simulate", "Serve a built-in simulated node (8 GPUs, several pods) instead of real hardware.").BoolVar(&o.simulate)
	app.Flag("simulate.scenario", "Serve a simulated node described by this YAML file (see docs/simulation.md); implies --simulate.").PlaceHolder("FILE").StringVar(&o.scenario)
	app.Flag("web.enable-pprof", "Serve Go profiling endpoints under /debug/pprof/ (off by default: they reveal internals and cost CPU).").BoolVar(&o.pprof)
	promslogflag.AddFlags(app, o.log)
	app.Version(version.Print(name))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(args); err != nil {
		return nil, app, err
	}
	return o, app, o.validate()
}

// validate checks what kingpin's types cannot, naming the flag at fault.
func (o *options) validate() error {
	switch {
	case o.window <= 0:
		return errors.New("--nvml.duty-cycle-window must be positive")
	case o.pollInterval <= 0 || o.pollInterval > 15*time.Second:
		return errors.New("--nvml.poll-interval must be between 0 and 15s: NVML keeps only about 16s of samples")
	case o.window < o.pollInterval:
		return fmt.Errorf("--nvml.duty-cycle-window (%s) must not be shorter than --nvml.poll-interval (%s)", o.window, o.pollInterval)
	case o.retryInterval <= 0:
		return errors.New("--nvml.init-retry-interval must be positive")
	case o.kubeletTimeout <= 0:
		return errors.New("--kubelet.timeout must be positive")
	case o.cacheTTL < 0:
		return errors.New("--kubelet.cache-ttl must not be negative")
	case o.maxRecv < 4<<20 || o.maxRecv > 2<<30-1:
		return errors.New("--kubelet.max-recv-msg-size must be between 4MiB and 2GiB")
	case o.maxRequests < 0:
		return errors.New("--web.max-requests must not be negative")
	case o.metricsPath == "" || o.metricsPath[0] != '/' || o.metricsPath == "/":
		return errors.New("--web.telemetry-path must be an absolute path other than /")
	}
	for _, d := range o.draDrivers {
		if d == "" || strings.ContainsAny(d, "/ ") {
			return fmt.Errorf("--dra.driver: %q is not a DRA driver name such as gpu.nvidia.com", d)
		}
	}
	if _, err := resource.NewMatcher(o.resources); err != nil {
		return fmt.Errorf("--gpu.resource: %w", err)
	}
	return nil
}

func main() {
	o, app, err := parseFlags(os.Args[1:])
	if err != nil {
		app.Fatalf("%v", err)
	}
	logger := promslog.New(o.log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// startWatcher starts the Kubernetes informers, or returns nil (with one log
// line saying why) when the API is disabled or not configured: requests,
// limits, capacity and allocatable then come from the kubelet and NVML.
func startWatcher(ctx context.Context, o *options, cfg *rest.Config, m *resource.Matcher, logger *slog.Logger) *kube.Watcher {
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

// run wires the sources, the collector and the HTTP server, and blocks until
// ctx ends or the server fails.
func run(ctx context.Context, o *options, logger *slog.Logger) error {
	logger.Info("starting "+name, "version", version.Info(), "build_context", version.BuildContext())
	matcher, _ := resource.NewMatcher(o.resources) // validated

	var lib gonvml.Interface = gonvml.New()
	socket := o.socket
	var restConfig *rest.Config // set by the simulated node
	if o.simulate || o.scenario != "" {
		sc := simulate.Builtin()
		if o.scenario != "" {
			var err error
			if sc, err = simulate.Load(o.scenario); err != nil {
				return fmt.Errorf("--simulate.scenario: %w", err)
			}
		}
		if sc.DRA != nil && !(o.draEnabled && slices.Contains(o.draDrivers, sc.DRA.Driver)) {
			// The scenario's claims would otherwise go unreported.
			o.draEnabled = true
			o.draDrivers = append(o.draDrivers, sc.DRA.Driver)
			logger.Info("the scenario has a DRA driver: DRA enabled", "driver", sc.DRA.Driver)
		}
		node, err := simulate.Start(sc, nil)
		if err != nil {
			return fmt.Errorf("start simulated node: %w", err)
		}
		defer node.Close()
		lib = node.NVML
		if node.RESTConfig != nil {
			restConfig = node.RESTConfig
		}
		if node.ProcRoot != "" {
			o.procfs = node.ProcRoot
		}
		if node.Socket != "" {
			socket = node.Socket
		}
		if o.nodeName == "" {
			o.nodeName = node.Name
		}
		logger.Info("serving a simulated node", "node", node.Name, "gpus", sc.GPUs, "pods", len(sc.Pods), "pod_resources_socket", socket)
	}
	if o.nodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --kube.node-name and no hostname: %w", err)
		}
		o.nodeName = h
		logger.Warn("--kube.node-name (NODE_NAME) not set; using the hostname", "node", h)
	}

	sampler := nvml.NewSampler(lib, nvml.Config{
		Window: o.window, Interval: o.pollInterval, RetryInterval: o.retryInterval, Logger: logger,
		Processes: o.perProcess,
	})
	sampler.Poll() // the first scrape already has devices
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); sampler.Run(ctx) }()

	draDrivers := []string{} // no claims read
	if o.draEnabled {
		draDrivers = o.draDrivers
	}
	kubelet, err := podresources.New(podresources.Config{
		Socket: socket, MaxRecvMsgSize: int(o.maxRecv), Timeout: o.kubeletTimeout, CacheTTL: o.cacheTTL, Matcher: matcher,
		DRADrivers: draDrivers,
	})
	if err != nil {
		return err
	}
	defer kubelet.Close()

	var specs collector.KubeSpecs
	if w := startWatcher(ctx, o, restConfig, matcher, logger); w != nil {
		specs.W = w // a nil *kube.Watcher must not become a non-nil interface
	}

	coll := collector.New(collector.Config{
		NodeName: o.nodeName, Matcher: matcher, Logger: logger,
		NVMLStaleAfter: 3*o.pollInterval + 10*time.Second,
		PerProcess:     o.perProcess, Procfs: cgroup.Reader{Root: o.procfs},
	}, sampler, kubelet, specs)

	handler, err := newHandler(o, coll, logger)
	if err != nil {
		return err
	}
	// Scrapes still waiting on a source when shutdown starts are cancelled
	// rather than waited for.
	serveCtx, cancelServe := context.WithCancel(context.Background())
	defer cancelServe()
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(srv, o.web, logger) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	cancelServe()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	select {
	case <-samplerDone:
	case <-time.After(2 * time.Second):
		logger.Warn("NVML poll still running at exit; not waiting for it")
	}
	return nil
}
