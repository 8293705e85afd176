// Package collector joins NVML devices, kubelet allocations and Kubernetes
// specs into the Container Insights GPU metric set, plus the exporter's own
// health. Sources are read as plain data; the join is a pure function (Join)
// and the Collector only turns its result into const metrics.
package collector

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Namespace prefixes the exporter's own metrics.
const Namespace = "kube_gpu_exporter"

// NVMLSource is the NVML side: the sampler's latest snapshot.
type NVMLSource interface {
	Snapshot() *nvml.Snapshot
	Errors() map[string]uint64
}

// KubeletSource is the pod-resources side.
type KubeletSource interface {
	Fetch(ctx context.Context) (*podresources.Snapshot, error)
	Errors() map[string]uint64
}

// SpecSource is the Kubernetes API side. ok is false when the API is not in
// use; healthy is false while list/watch fails (the last state is still
// returned and used).
type SpecSource interface {
	Specs() (specs *Specs, healthy bool)
	Errors() map[string]uint64
}

// Config holds the Collector's settings.
type Config struct {
	// NodeName is the node label of every node- and container-level series.
	NodeName string
	// Matcher selects GPU resources.
	Matcher *resource.Matcher
	// NVMLStaleAfter marks NVML down when the sampler has not finished a poll
	// for this long (an NVML call that hangs must not freeze the numbers).
	NVMLStaleAfter time.Duration
	// PerProcess turns on per-process attribution of shared devices; Procfs
	// is where the processes' cgroups are read (the host's /proc).
	PerProcess bool
	Procfs     cgroup.Reader
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Collector implements prometheus.Collector. Collect uses a background
// context; WithContext binds a scrape's deadline.
type Collector struct {
	cfg     Config
	nvml    NVMLSource
	kubelet KubeletSource
	specs   SpecSource

	containerDuty, containerMemTotal, containerMemUsed *prometheus.Desc
	containerRequests, containerLimits                 *prometheus.Desc
	nodeCapacity, nodeAllocatable                      *prometheus.Desc
	nodeDuty, nodeMemTotal, nodeMemUsed                *prometheus.Desc
	up, duration, errors, unmatched                    *prometheus.Desc
	attribution, unattrDuty, unattrMem                 *prometheus.Desc
	deviceInfo                                         *prometheus.Desc

	noAttribution string // why per-process attribution is off everywhere, or ""

	ownerMu sync.Mutex
	owners  map[uint32]OwnerResult // cgroup owners of GPU processes, by PID

	logMu  sync.Mutex
	logged map[string]bool
}

var _ prometheus.Collector = (*Collector)(nil)

var (
	usageLabels    = []string{"node", "namespace", "pod", "container", "gpu_id", "gpu_model", "gpu_vendor"}
	resourceLabels = []string{"node", "namespace", "pod", "container", "resource", "gpu_vendor"}
	nodeResLabels  = []string{"node", "resource", "gpu_vendor"}
	deviceLabels   = []string{"node", "gpu_id", "gpu_model", "gpu_vendor"}
	unattrLabels   = []string{"node", "gpu_id", "gpu_model", "gpu_vendor", "namespace", "pod"}
	// The device_info series carries what the contract label sets leave
	// out (a MIG instance's parent, profile and instance IDs), for joins on
	// gpu_id rather than more labels on every series.
	deviceInfoLabels = []string{"node", "gpu_id", "gpu_model", "parent_gpu_id", "mig_profile", "gpu_instance_id", "compute_instance_id", "pci_bus_id"}
)

// New builds a Collector. kubelet and specs may be nil: without the kubelet
// there are no container metrics; without specs, requests, limits,
// capacity and allocatable come from the kubelet and NVML.
func New(cfg Config, nv NVMLSource, kubelet KubeletSource, specs SpecSource) *Collector {
	if cfg.Matcher == nil {
		cfg.Matcher = resource.MustMatcher(resource.DefaultAll...)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &Collector{
		cfg: cfg, nvml: nv, kubelet: kubelet, specs: specs, owners: map[uint32]OwnerResult{},
		containerDuty:     d("containerGpuDutyCycle", "Percentage of time over the duty-cycle window during which the GPU (or MIG instance) held by the container was busy (0-100).", usageLabels),
		containerMemTotal: d("containerGpumemoryTotalBytes", "GPU memory in bytes available to the container on the device (the GPU's, or the MIG instance's).", usageLabels),
		containerMemUsed:  d("containerGpumemoryUsedBytes", "GPU memory in bytes in use on the device (or MIG instance) held by the container.", usageLabels),
		containerRequests: d("containerGpuRequests", "GPUs requested by the container, per GPU resource.", resourceLabels),
		containerLimits:   d("containerGpuLimits", "GPUs limited for the container, per GPU resource.", resourceLabels),
		nodeCapacity:      d("nodeGpuCapacity", "GPUs on the node, per GPU resource.", nodeResLabels),
		nodeAllocatable:   d("nodeGpuAllocatable", "GPUs Kubernetes can hand out on the node, per GPU resource.", nodeResLabels),
		nodeDuty:          d("nodeGpuDutyCycle", "Percentage of time over the duty-cycle window during which the device was busy (0-100), whether allocated or not.", deviceLabels),
		nodeMemTotal:      d("nodeGpumemoryTotalBytes", "GPU memory in bytes of the device.", deviceLabels),
		nodeMemUsed:       d("nodeGpumemoryUsedBytes", "GPU memory in bytes in use on the device.", deviceLabels),
		up:                d(Namespace+"_up", "Whether the source answered in this scrape (1) or not (0).", []string{"source"}),
		duration:          d(Namespace+"_scrape_duration_seconds", "Seconds spent reading the source: the last NVML poll, or this scrape's kubelet call.", []string{"source"}),
		errors:            d(Namespace+"_errors_total", "Errors met reading a source, by reason.", []string{"source", "reason"}),
		unmatched:         d(Namespace+"_unmatched_devices", "Device IDs the kubelet allocated that match no NVML device; such containers have no usage series.", nil),
		attribution:       d(Namespace+"_attribution_info", "How the container numbers of a device held by containers are obtained: mode exclusive, per_process or device (reason says why per-process data could not be used).", []string{"node", "gpu_id", "mode", "reason"}),
		unattrDuty:        d("kube_gpu_unattributed_duty_cycle", "SM utilization (0-100) on the device, averaged over the duty-cycle window, of processes belonging to no container that holds it; namespace and pod name their pod when their cgroup names one.", unattrLabels),
		unattrMem:         d("kube_gpu_unattributed_memory_used_bytes", "GPU memory in bytes on the device held by processes belonging to no container that holds it.", unattrLabels),
		deviceInfo:        d(Namespace+"_device_info", "One series per device NVML reports, GPU or MIG instance: the MIG instance's parent GPU, profile and GPU/compute instance IDs (empty on whole GPUs) and the PCI address, for grouping by gpu_id.", deviceInfoLabels),
		logged:            map[string]bool{},
	}
	switch {
	case !cfg.PerProcess:
		c.noAttribution = "disabled"
	default:
		if err := cfg.Procfs.Available(); err != nil {
			c.noAttribution = "no_procfs"
			cfg.Logger.Warn("per-process attribution impossible: shared GPUs get device-wide numbers", "err", err)
		}
	}
	return c
}

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.containerDuty, c.containerMemTotal, c.containerMemUsed, c.containerRequests, c.containerLimits,
		c.nodeCapacity, c.nodeAllocatable, c.nodeDuty, c.nodeMemTotal, c.nodeMemUsed,
		c.up, c.duration, c.errors, c.unmatched, c.attribution, c.unattrDuty, c.unattrMem, c.deviceInfo,
	} {
		ch <- d
	}
}

// Collect gathers with no deadline other than the sources' own timeouts.
func (c *Collector) Collect(ch chan<- prometheus.Metric) { c.collect(context.Background(), ch) }

// WithContext returns a prometheus.Collector bound to one scrape's context,
// so the scrape deadline reaches the kubelet call.
func (c *Collector) WithContext(ctx context.Context) prometheus.Collector {
	return scoped{c: c, ctx: ctx}
}

type scoped struct {
	c   *Collector
	ctx context.Context
}

func (s scoped) Describe(ch chan<- *prometheus.Desc) { s.c.Describe(ch) }
func (s scoped) Collect(ch chan<- prometheus.Metric) { s.c.collect(s.ctx, ch) }

// Gather reads every source once and joins them.
func (c *Collector) Gather(ctx context.Context) (View, Health) {
	var h Health
	in := Inputs{Matcher: c.cfg.Matcher}

	snap := c.nvml.Snapshot()
	h.NVMLUp = snap.Up
	if snap.Up && c.cfg.NVMLStaleAfter > 0 && c.cfg.Now().Sub(snap.Taken) > c.cfg.NVMLStaleAfter {
		h.NVMLUp = false
		c.logOnce("nvml-stale", "NVML poll is overdue; serving no device readings until it returns", "last_poll", snap.Taken)
	} else {
		c.forget("nvml-stale")
	}
	h.NVMLDuration = snap.PollDuration.Seconds()
	if h.NVMLUp {
		in.Devices, in.NVMLUp = snap.Devices, true
	}

	if c.kubelet != nil {
		start := c.cfg.Now()
		ks, err := c.kubelet.Fetch(ctx)
		h.KubeletDuration = c.cfg.Now().Sub(start).Seconds()
		h.HasKubelet = true
		if err != nil {
			c.logOnce("kubelet-down", "kubelet pod-resources unavailable; serving node-level metrics only", "err", err)
		} else {
			c.forget("kubelet-down")
			h.KubeletUp = true
			in.Kubelet = ks
		}
	}

	if c.specs != nil {
		h.HasKube = true
		in.Specs, h.KubeUp = c.specs.Specs()
	}
	in.NoAttribution = c.noAttribution
	if in.NoAttribution == "" && in.Specs != nil {
		in.Owners = c.resolveOwners(in.Devices)
	}

	v := Join(in)
	for _, id := range v.Unmatched {
		c.logOnce("unmatched:"+id, "kubelet device ID matches no NVML device; its container gets no usage series", "device_id", id)
	}
	return v, h
}

// resolveOwners reads the cgroup of every GPU process not seen before; PIDs
// no longer on any device are forgotten, so a reused PID is read afresh.
func (c *Collector) resolveOwners(devs []nvml.Reading) map[uint32]OwnerResult {
	c.ownerMu.Lock()
	defer c.ownerMu.Unlock()
	next := make(map[uint32]OwnerResult, len(c.owners))
	for i := range devs {
		for _, p := range devs[i].Processes {
			if _, done := next[p.PID]; done {
				continue
			}
			res, ok := c.owners[p.PID]
			if !ok {
				o, err := c.cfg.Procfs.Owner(p.PID)
				res = OwnerResult{Owner: o, Err: err}
			}
			next[p.PID] = res
		}
	}
	c.owners = next
	return next
}

// Health is the per-source state of one scrape.
type Health struct {
	NVMLUp, KubeletUp, KubeUp     bool
	HasKubelet, HasKube           bool
	NVMLDuration, KubeletDuration float64
}

func (c *Collector) collect(ctx context.Context, ch chan<- prometheus.Metric) {
	v, h := c.Gather(ctx)
	c.emit(ch, v)
	c.emitHealth(ch, v, h)
}

func (c *Collector) emit(ch chan<- prometheus.Metric, v View) {
	node := c.cfg.NodeName
	const vendor = "nvidia"
	for i := range v.Devices {
		d := &v.Devices[i]
		ch <- prometheus.MustNewConstMetric(c.deviceInfo, prometheus.GaugeValue, 1, node, d.UUID, d.Name, d.ParentUUID, d.Profile, instanceID(d.GPUInstance), instanceID(d.ComputeInstance), d.PCIBusID)
		if d.HasDutyCycle {
			ch <- prometheus.MustNewConstMetric(c.nodeDuty, prometheus.GaugeValue, d.DutyCycle, node, d.UUID, d.Name, vendor)
		}
		if d.MemoryTotal > 0 {
			ch <- prometheus.MustNewConstMetric(c.nodeMemTotal, prometheus.GaugeValue, float64(d.MemoryTotal), node, d.UUID, d.Name, vendor)
		}
		if d.HasMemory {
			ch <- prometheus.MustNewConstMetric(c.nodeMemUsed, prometheus.GaugeValue, float64(d.MemoryUsed), node, d.UUID, d.Name, vendor)
		}
	}
	for _, u := range v.Usage {
		d := u.Device
		if u.HasDutyCycle {
			ch <- prometheus.MustNewConstMetric(c.containerDuty, prometheus.GaugeValue, u.DutyCycle, node, u.Namespace, u.Pod, u.Container, d.UUID, d.Name, vendor)
		}
		if d.MemoryTotal > 0 {
			ch <- prometheus.MustNewConstMetric(c.containerMemTotal, prometheus.GaugeValue, float64(d.MemoryTotal), node, u.Namespace, u.Pod, u.Container, d.UUID, d.Name, vendor)
		}
		if u.HasMemory {
			ch <- prometheus.MustNewConstMetric(c.containerMemUsed, prometheus.GaugeValue, float64(u.MemoryUsed), node, u.Namespace, u.Pod, u.Container, d.UUID, d.Name, vendor)
		}
	}
	for _, a := range v.Attribution {
		ch <- prometheus.MustNewConstMetric(c.attribution, prometheus.GaugeValue, 1, node, a.Device.UUID, a.Mode, a.Reason)
	}
	for _, u := range v.Unattributed {
		d := u.Device
		ch <- prometheus.MustNewConstMetric(c.unattrDuty, prometheus.GaugeValue, u.DutyCycle, node, d.UUID, d.Name, vendor, u.Namespace, u.Pod)
		ch <- prometheus.MustNewConstMetric(c.unattrMem, prometheus.GaugeValue, float64(u.MemoryUsed), node, d.UUID, d.Name, vendor, u.Namespace, u.Pod)
	}
	for _, r := range v.Requests {
		ch <- prometheus.MustNewConstMetric(c.containerRequests, prometheus.GaugeValue, r.Request, node, r.Namespace, r.Pod, r.Container, r.Resource, r.Vendor)
		ch <- prometheus.MustNewConstMetric(c.containerLimits, prometheus.GaugeValue, r.Limit, node, r.Namespace, r.Pod, r.Container, r.Resource, r.Vendor)
	}
	for _, r := range v.Node {
		if r.HasCapacity {
			ch <- prometheus.MustNewConstMetric(c.nodeCapacity, prometheus.GaugeValue, r.Capacity, node, r.Resource, r.Vendor)
		}
		if r.HasAllocatable {
			ch <- prometheus.MustNewConstMetric(c.nodeAllocatable, prometheus.GaugeValue, r.Allocatable, node, r.Resource, r.Vendor)
		}
	}
}

func (c *Collector) emitHealth(ch chan<- prometheus.Metric, v View, h Health) {
	gauge := func(d *prometheus.Desc, val float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, val, lv...)
	}
	gauge(c.up, b2f(h.NVMLUp), "nvml")
	gauge(c.duration, h.NVMLDuration, "nvml")
	emitErrors(ch, c.errors, "nvml", c.nvml.Errors())
	if h.HasKubelet {
		gauge(c.up, b2f(h.KubeletUp), "kubelet")
		gauge(c.duration, h.KubeletDuration, "kubelet")
		emitErrors(ch, c.errors, "kubelet", c.kubelet.Errors())
		gauge(c.unmatched, float64(len(v.Unmatched)))
	}
	if h.HasKube {
		gauge(c.up, b2f(h.KubeUp), "kubernetes")
		emitErrors(ch, c.errors, "kubernetes", c.specs.Errors())
	}
}

func emitErrors(ch chan<- prometheus.Metric, d *prometheus.Desc, source string, counts map[string]uint64) {
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(counts[r]), source, r)
	}
}

// instanceID is a MIG instance ID as a label value: empty on whole GPUs.
func instanceID(id int) string {
	if id < 0 {
		return ""
	}
	return strconv.Itoa(id)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// logOnce logs a condition the first time it is seen, not once per scrape.
// The set of remembered unmatched IDs is bounded so a kubelet spewing new
// junk IDs cannot grow memory without limit.
func (c *Collector) logOnce(key, msg string, args ...any) {
	c.logMu.Lock()
	if c.logged[key] || len(c.logged) > 4096 {
		c.logMu.Unlock()
		return
	}
	c.logged[key] = true
	c.logMu.Unlock()
	c.cfg.Logger.Warn(msg, args...)
}

func (c *Collector) forget(key string) {
	c.logMu.Lock()
	if c.logged[key] {
		delete(c.logged, key)
		c.logMu.Unlock()
		c.cfg.Logger.Info("recovered: " + key)
		return
	}
	c.logMu.Unlock()
}
