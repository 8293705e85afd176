// Package exporter holds what every kube-gpu-exporter command shares: the
// flags, the HTTP handler and the wiring of the sources, the collector and
// the server. A command supplies the sources (real NVML and the kubelet's
// socket, or a simulated node), so that the production binary links no
// simulator.
package exporter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Name is the program's name in its version string, log and landing page.
const Name = "kube-gpu-exporter"

// Help is the production command's one-line description.
const Help = "Prometheus exporter of per-container and per-node GPU usage, requests, limits, capacity and allocatable for Kubernetes nodes."

// defaultAddress is not a port any well-known exporter uses (node_exporter
// 9100, dcgm-exporter 9400, nvidia_gpu_exporter 9835, ...).
const defaultAddress = ":9871"

// Options is everything the flags set; it is passed down, never read
// globally. Only AddFlags fills it.
type Options struct {
	web            *web.FlagConfig
	metricsPath    string
	maxRequests    int
	maxConns       int
	nodeName       string
	clusterName    string
	clusterID      string
	socket         string
	maxRecv        int64
	kubeletTimeout time.Duration
	cacheTTL       time.Duration
	restartGrace   time.Duration
	window         time.Duration
	pollInterval   time.Duration
	retryInterval  time.Duration
	resources      []string
	pprof          bool
	kubeEnabled    bool
	kubeconfig     string
	perProcess     bool
	// The collector switches, --[no-]collector.<group>.
	collectTelemetry, collectHealth, collectEvents, collectProfiling, collectChargeback bool
	exceptionsOnly                                                                      bool
	procfs                                                                              string
	draEnabled                                                                          bool
	draDrivers                                                                          []string
	log                                                                                 *promslog.Config
}

// AddFlags registers the exporter's flags, --version and -h on app and
// returns the Options they fill once app parses its arguments. A command
// may add flags of its own before parsing.
func AddFlags(app *kingpin.Application) *Options {
	o := &Options{log: &promslog.Config{}}
	o.web = kingpinflag.AddFlags(app, defaultAddress)
	app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").StringVar(&o.metricsPath)
	intFlag(app, "web.max-requests", "Maximum number of concurrent scrape requests; 0 disables the limit.", "40", &o.maxRequests)
	intFlag(app, "web.max-connections", "Maximum number of open HTTP connections per listen address, idle ones included; more wait in the kernel's backlog until one closes. 0 disables the limit.", "512", &o.maxConns)
	app.Flag("kube.node-name", "Name of this node: the node label of every series.").Envar("NODE_NAME").StringVar(&o.nodeName)
	app.Flag("cluster.name", "If set, adds a cluster_name label with this value to every series.").Default("").StringVar(&o.clusterName)
	app.Flag("cluster.id", "If set, adds a cluster_id label with this value to every series.").Default("").StringVar(&o.clusterID)
	app.Flag("kubelet.pod-resources-socket", "Path of the kubelet's pod-resources socket.").Default(podresources.DefaultSocket).StringVar(&o.socket)
	bytesFlag(app, "kubelet.max-recv-msg-size", "Largest pod-resources reply accepted; a larger one is counted as an error (reason message_too_large). Decoding a reply takes up to about 20 times its size in memory: raise the memory limit with it (docs/performance.md).", defaultMaxRecv, &o.maxRecv)
	durationFlag(app, "kubelet.timeout", "Timeout of every pod-resources call.", "5s", &o.kubeletTimeout)
	durationFlag(app, "kubelet.restart-grace", "How long a pod-resources reply shaped like a restarting kubelet's (no pods at all, or no GPU allocatable, where there were some) is answered with the last one before it, counted as reason restart_window; 0 believes every reply.", podresources.DefaultRestartGrace.String(), &o.restartGrace)
	durationFlag(app, "kubelet.cache-ttl", "How long a pod-resources reply is reused by later scrapes (the kubelet rate-limits the socket for all clients).", "1s", &o.cacheTTL)
	durationFlag(app, "nvml.duty-cycle-window", "Window over which the GPU duty cycle is averaged.", "60s", &o.window)
	durationFlag(app, "nvml.poll-interval", "How often NVML is polled for samples and memory (NVML keeps about 16s of samples).", "2s", &o.pollInterval)
	durationFlag(app, "nvml.init-retry-interval", "How often NVML initialisation is retried while no driver is found.", "30s", &o.retryInterval)
	app.Flag("gpu.resource", "Extended resource counted as a GPU; repeatable; a trailing * matches a prefix; =vendor overrides the vendor label.").
		Default(resource.DefaultAll...).StringsVar(&o.resources)
	app.Flag("kube.enabled", "Read GPU requests, limits, capacity and allocatable from the Kubernetes API (pods and the Node of --kube.node-name); --no-kube.enabled derives them from the kubelet and NVML.").Default("true").BoolVar(&o.kubeEnabled)
	app.Flag("kubeconfig", "Kubeconfig file for running outside a cluster; in-cluster configuration when empty.").Envar("KUBECONFIG").StringVar(&o.kubeconfig)
	app.Flag("nvml.per-process", "Collect per-process GPU data to give each container sharing a GPU (time-slicing, MPS) its own numbers; needs the host's /proc (--path.procfs) and the Kubernetes API.").Default("true").BoolVar(&o.perProcess)
	app.Flag("collector.telemetry", "Read each GPU's power, energy, temperatures, clocks, clock event reasons, memory bandwidth, encoder/decoder and PCIe replays (about 15 NVML calls per GPU and poll).").Default("true").BoolVar(&o.collectTelemetry)
	app.Flag("collector.health", "Read each GPU's ECC errors, retired pages or remapped rows and recovery action, and serve a health summary per GPU and holder.").Default("true").BoolVar(&o.collectHealth)
	app.Flag("collector.events", "Count each GPU's Xid events (an NVML event set waited on by its own goroutine), per GPU and per container holding it.").Default("true").BoolVar(&o.collectEvents)
	app.Flag("collector.profiling", "Read GPM metrics (SM activity and occupancy, tensor, DRAM, FP16/32/64, PCIe, NVLink) on Hopper and newer GPUs and MIG instances, unprivileged; split per container by its share of the GPU.").Default("true").BoolVar(&o.collectProfiling)
	app.Flag("collector.chargeback", "Serve per-container energy and allocated/used GPU-seconds counters, a shared GPU's energy split by each holder's share (docs/metrics.md).").Default("true").BoolVar(&o.collectChargeback)
	app.Flag("metrics.exceptions-only", "Serve kube_gpu_family_supported only for the families a GPU does not serve (value 0) and kube_gpu_clock_event_active only for the active reasons (value 1): about 200 of an 8-GPU node's 750 series. Queries comparing them with == 0 and == 1 keep working; an absent series then means supported, or not active (docs/scale.md).").Default("false").BoolVar(&o.exceptionsOnly)
	app.Flag("path.procfs", "Where the host's procfs is mounted; GPU processes' cgroups are read there to find their container.").Default("/proc").StringVar(&o.procfs)
	app.Flag("dra.enabled", "Report GPUs allocated through Dynamic Resource Allocation claims: read claims from the kubelet and this node's ResourceSlices (resource.k8s.io/v1; needs list and watch on resourceslices).").Default("false").BoolVar(&o.draEnabled)
	app.Flag("dra.driver", "DRA driver whose devices are GPUs; repeatable.").Default(resource.DefaultDRADrivers()...).StringsVar(&o.draDrivers)
	app.Flag("web.enable-pprof", "Serve Go profiling endpoints under /debug/pprof/ (off by default: they reveal internals and cost CPU).").BoolVar(&o.pprof)
	promslogflag.AddFlags(app, o.log)
	app.Version(version.Print(Name))
	app.HelpFlag.Short('h')
	return o
}

// Parse parses args with the exporter's flags on a new application named
// Name: the production command's flags, and nothing else.
func Parse(args []string) (*Options, *kingpin.Application, error) {
	app := kingpin.New(Name, Help)
	o := AddFlags(app)
	if _, err := app.Parse(args); err != nil {
		return nil, app, err
	}
	return o, app, o.Validate()
}

// Logger returns the logger the log flags describe.
func (o *Options) Logger() *slog.Logger { return promslog.New(o.log) }

// Validate checks what kingpin's types cannot, naming the flag at fault.
func (o *Options) Validate() error {
	switch {
	case o.window <= 0 || o.window > maxWindow:
		return fmt.Errorf("--nvml.duty-cycle-window must be positive and at most %s: the sampler keeps every sample of the window", maxWindow)
	case o.pollInterval < minPollInterval || o.pollInterval > 15*time.Second:
		return fmt.Errorf("--nvml.poll-interval must be between %s (NVML calls are not free) and 15s (NVML keeps only about 16s of samples)", minPollInterval)
	case o.window < o.pollInterval:
		return fmt.Errorf("--nvml.duty-cycle-window (%s) must not be shorter than --nvml.poll-interval (%s)", o.window, o.pollInterval)
	case o.retryInterval <= 0:
		return errors.New("--nvml.init-retry-interval must be positive")
	case o.kubeletTimeout <= 0:
		return errors.New("--kubelet.timeout must be positive")
	case o.restartGrace < 0:
		return errors.New("--kubelet.restart-grace must not be negative")
	case o.cacheTTL < 0:
		return errors.New("--kubelet.cache-ttl must not be negative")
	case o.maxRecv < 4<<20 || o.maxRecv > 2<<30-1:
		return errors.New("--kubelet.max-recv-msg-size must be between 4MiB and 2GiB")
	case o.maxRequests < 0:
		return errors.New("--web.max-requests must not be negative")
	case o.maxConns < 0:
		return errors.New("--web.max-connections must not be negative")
	}
	if err := checkMetricsPath(o.metricsPath); err != nil {
		return err
	}
	if err := o.checkListenAddresses(); err != nil {
		return err
	}
	for flag, v := range map[string]string{"cluster.name": o.clusterName, "cluster.id": o.clusterID, "kube.node-name": o.nodeName} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("--%s: %q is not valid UTF-8, which label values must be", flag, v)
		}
	}
	for _, d := range o.draDrivers {
		if d == "" || strings.ContainsAny(d, "/ ") {
			return fmt.Errorf("--dra.driver: %q is not a DRA driver name such as %s", d, resource.DefaultDRADriver)
		}
	}
	if _, err := resource.NewMatcher(o.resources); err != nil {
		return fmt.Errorf("--gpu.resource: %w", err)
	}
	return nil
}

// defaultMaxRecv is the largest kubelet reply the chart's 128Mi memory limit
// can decode (recvCostPerByte): far more than a node's pods take (a few
// hundred KiB for 250 pods).
const defaultMaxRecv = "4MiB"

// recvCostPerByte is the peak memory that decoding a pod-resources reply
// takes per byte of reply, measured with GOMEMLIMIT set (about 20 without;
// docs/performance.md).
const recvCostPerByte = 14

// The bounds of the NVML sampler's timing flags.
const (
	minPollInterval = 100 * time.Millisecond
	maxWindow       = time.Hour
)

// checkMetricsPath refuses what http.ServeMux would read as a pattern
// rather than one path (wildcards, a trailing slash that serves a whole
// subtree) and paths no client sends as given (unclean ones, which the mux
// redirects, or characters that need escaping).
func checkMetricsPath(p string) error {
	const flag = "--web.telemetry-path"
	switch {
	case p == "" || p[0] != '/' || p == "/":
		return fmt.Errorf("%s must be an absolute path other than /", flag)
	case path.Clean(p) != p:
		return fmt.Errorf("%s=%s is not a clean path (no //, . or .. and no trailing /); did you mean %s?", flag, p, path.Clean(p))
	}
	for _, r := range p {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && !strings.ContainsRune("/-._~", r) {
			return fmt.Errorf("%s=%q: only letters, digits and /-._~ may be used", flag, p)
		}
	}
	return nil
}

// checkListenAddresses refuses addresses that would listen on a port
// nobody chose: an empty address or port is a random port on every
// interface.
func (o *Options) checkListenAddresses() error {
	if o.web.WebSystemdSocket != nil && *o.web.WebSystemdSocket {
		return nil
	}
	if len(*o.web.WebListenAddresses) == 0 {
		return errors.New("--web.listen-address: no address to listen on")
	}
	for _, a := range *o.web.WebListenAddresses {
		if strings.HasPrefix(a, "vsock://") {
			continue
		}
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("--web.listen-address=%q: %w", a, err)
		}
		if port == "" || port == "0" {
			return fmt.Errorf("--web.listen-address=%q: a port is needed, such as %s", a, defaultAddress)
		}
	}
	return nil
}
