// Package collector joins NVML devices, kubelet allocations and Kubernetes
// specs into the Container Insights GPU metric set, plus the exporter's own
// health. Sources are read as snapshots; the join is a pure function (Join)
// and the Collector only turns its result into const metrics through the
// family tables in families.go.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/cgroup"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Namespace prefixes the exporter's own metrics; Prefix the GPU families
// that are not Container Insights names (docs/metrics.md, "Names").
const (
	Namespace = "kube_gpu_exporter"
	Prefix    = "kube_gpu"
)

// maxXidRows bounds the containers' Xid series kept, whatever the churn.
const maxXidRows = 4096

// Source is the one shape of every input: Read returns the latest snapshot
// without waiting on the outside world for longer than ctx allows, and an
// error saying why the source is not up. A source may return its last known
// data together with an error (the API server is unreachable, the informers'
// last state still serves). Errors counts failures since start by reason.
type Source[T any] interface {
	Read(ctx context.Context) (T, error)
	Errors() map[string]uint64
}

// The collector's sources. A nil source is one not in use.
type (
	// NVMLSource is the NVML sampler's latest snapshot.
	NVMLSource = Source[*nvml.Snapshot]
	// KubeletSource is the pod-resources view.
	KubeletSource = Source[*podresources.Snapshot]
	// SpecSource is the Kubernetes API view (kube.Watcher).
	SpecSource = Source[*kube.Specs]
	// OwnerSource is the cgroup owners of GPU processes by PID
	// (cgroup.Resolver), resolved off the scrape path.
	OwnerSource = Source[map[uint32]cgroup.Result]
)

// Config holds the Collector's settings.
type Config struct {
	// NodeName is the node label of every node- and container-level series.
	NodeName string
	// Matcher selects GPU resources.
	Matcher *resource.Matcher
	// NVMLStaleAfter marks NVML down when the sampler has not finished a poll
	// for this long (an NVML call that hangs must not freeze the numbers).
	NVMLStaleAfter time.Duration
	// PerProcess turns on per-process attribution of shared devices from
	// Owners; without Owners every shared device gets device-wide numbers.
	PerProcess bool
	Owners     OwnerSource
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Telemetry, Health and Events switch the device telemetry, health
	// and Xid families on (--collector.telemetry, .health, .events).
	Telemetry, Health, Events bool
	// Profiling switches the GPM families on (--collector.profiling).
	Profiling bool
	// Chargeback switches the per-container energy and GPU-seconds
	// counters on (--collector.chargeback).
	Chargeback bool
	// ExceptionsOnly serves the per-device state families that are
	// constant on a healthy node (exceptionValues) only where they say
	// something: an unsupported family, an active clock event reason
	// (--metrics.exceptions-only).
	ExceptionsOnly bool
	// XidRetention is how long a container's Xid, energy and GPU-seconds
	// series outlive it; 0 means 1h.
	XidRetention time.Duration
}

// Collector implements prometheus.Collector. Collect uses a background
// context; WithContext binds a scrape's deadline.
type Collector struct {
	cfg     Config
	nvml    NVMLSource
	kubelet KubeletSource
	specs   SpecSource

	devices   *level[nvml.Reading]
	usage     *level[Usage]
	attr      *level[Attribution]
	unattr    *level[Unattributed]
	requests  *level[ContainerResource]
	podReqs   *level[PodResource]
	workloads *level[PodWorkload]
	nodeRes   *level[NodeResource]
	devHealth *level[DeviceHealth]
	ctrHealth *level[ContainerHealth]
	kubHealth *level[KubeletDeviceHealth]
	taints    *level[DeviceTaint]
	ctrXid    *level[ContainerXid]
	xids      *xidLedger
	accounts  *level[ContainerAccount]
	devAcct   *level[DeviceAccount]
	energy    *energyLedger
	bg        background
	self      selfDescs
	log       *stateLog
	unmatched *idLog
	lastErr   lastErrors
}

var _ prometheus.Collector = (*Collector)(nil)

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
	if cfg.XidRetention <= 0 {
		cfg.XidRetention = time.Hour
	}
	node := cfg.NodeName
	devFams := slices.Clone(deviceFamilies)
	if cfg.Telemetry {
		devFams = append(devFams, telemetryFamilies...)
	}
	if cfg.Health {
		devFams = append(devFams, healthFamilies...)
	}
	if cfg.Events {
		devFams = append(devFams, eventFamilies...)
	}
	if cfg.Profiling {
		devFams = append(devFams, profilingFamilies...)
	}
	if cfg.Telemetry || cfg.Health || cfg.Events || cfg.Profiling {
		devFams = append(devFams, supportFamilies...)
	}
	if cfg.ExceptionsOnly {
		devFams = onlyExceptions(devFams)
	}
	useFams := usageFamilies
	if cfg.Profiling {
		useFams = append(slices.Clone(usageFamilies), containerProfilingFamilies...)
	}
	dv, uv := deviceValues(node), usageValues(node)
	c := &Collector{
		cfg: cfg, nvml: nv, kubelet: kubelet, specs: specs,
		devices:   newLevel(deviceLabels, dv, devFams),
		devHealth: newLevel(deviceLabels, through(dv, func(h *DeviceHealth) *nvml.Reading { return h.Device }), deviceHealthFamilies),
		ctrHealth: newLevel(usageLabels, through(uv, func(h *ContainerHealth) *Usage { return h.Usage }), containerHealthFamilies),
		kubHealth: newLevel(usageLabels, kubeletHealthValues(node), kubeletHealthFamilies),
		taints:    newLevel(deviceLabels, deviceTaintValues(node), deviceTaintFamilies),
		ctrXid:    newLevel(usageLabels, containerXidValues(node), containerXidFamilies),
		xids:      newXidLedger(cfg.XidRetention, maxXidRows),
		accounts:  newLevel(usageLabels, accountValues(node), accountFamilies),
		devAcct:   newLevel(deviceLabels, through(dv, func(d *DeviceAccount) *nvml.Reading { return d.Device }), deviceAccountFamilies),
		energy:    newEnergyLedger(cfg.XidRetention, maxXidRows),
		usage:     newLevel(usageLabels, uv, useFams),
		attr:      newLevel(deviceLabels, through(dv, func(a *Attribution) *nvml.Reading { return a.Device }), attributionFamilies),
		unattr:    newLevel(deviceLabels, through(dv, func(u *Unattributed) *nvml.Reading { return u.Device }), unattributedFamilies),
		requests:  newLevel(resourceLabels, requestValues(node), requestFamilies),
		podReqs:   newLevel(podResLabels, podResValues(node), podRequestFamilies),
		workloads: newLevel(podLabels, podWorkloadValues(node), workloadFamilies),
		nodeRes:   newLevel(nodeResLabels, nodeResValues(node), nodeResourceFamilies),
		self:      newSelfDescs(),
		log:       newStateLog(cfg.Logger),
		unmatched: newIDLog(cfg.Logger, maxLoggedIDs),
	}
	return c
}

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.devices.describe(ch)
	c.usage.describe(ch)
	c.attr.describe(ch)
	c.unattr.describe(ch)
	c.requests.describe(ch)
	c.podReqs.describe(ch)
	c.workloads.describe(ch)
	c.taints.describe(ch)
	c.nodeRes.describe(ch)
	if c.cfg.Health {
		c.devHealth.describe(ch)
		c.ctrHealth.describe(ch)
		c.kubHealth.describe(ch)
	}
	if c.cfg.Events {
		c.ctrXid.describe(ch)
	}
	if c.cfg.Chargeback {
		c.accounts.describe(ch)
		c.devAcct.describe(ch)
	}
	c.self.describe(ch)
}

// Collect gathers with no deadline other than the sources' own timeouts.
func (c *Collector) Collect(ch chan<- prometheus.Metric) { c.collect(context.Background(), ch) }

// WithContext returns a prometheus.Collector bound to one scrape's context,
// so the scrape deadline reaches the sources (the kubelet call, before the
// first accounting step has made one).
func (c *Collector) WithContext(ctx context.Context) prometheus.Collector {
	return scoped{c: c, ctx: ctx}
}

type scoped struct {
	c   *Collector
	ctx context.Context
}

func (s scoped) Describe(ch chan<- *prometheus.Desc) { s.c.Describe(ch) }
func (s scoped) Collect(ch chan<- prometheus.Metric) { s.c.collect(s.ctx, ch) }

// Gather reads every source's snapshot once and joins them. It makes no
// NVML or kubelet call and reads no file: the kubelet's assignment is the
// one the last accounting step read (Account), and the ledgers are only
// read. Before the first step it calls the kubelet itself.
func (c *Collector) Gather(ctx context.Context) (View, Health) {
	var h Health
	in := Inputs{Matcher: c.cfg.Matcher}

	snap, err := c.nvml.Read(ctx)
	h.NVMLUp = err == nil && snap != nil
	h.NVMLErr = err
	if err == nil && snap == nil {
		h.NVMLErr = errNoPoll
	}
	if snap != nil {
		h.NVMLDuration = snap.PollDuration.Seconds()
	}
	stale := h.NVMLUp && c.cfg.NVMLStaleAfter > 0 && c.cfg.Now().Sub(snap.Taken) > c.cfg.NVMLStaleAfter
	if stale {
		h.NVMLUp = false
		h.NVMLErr = fmt.Errorf("%w: last poll at %s", errStale, snap.Taken.UTC().Format(time.RFC3339))
		c.log.set("nvml-stale", true, "NVML poll is overdue; serving no device readings until it returns", "last_poll", snap.Taken)
	} else {
		c.log.set("nvml-stale", false, "")
	}
	if h.NVMLUp {
		in.Devices, in.NVMLUp = snap.Devices, true
	}

	if c.kubelet != nil {
		ks, dur, err := c.kubeletView(ctx)
		h.KubeletDuration = dur
		h.HasKubelet = true
		h.KubeletErr = err
		if err == nil {
			h.KubeletUp = true
			in.Kubelet = ks
		}
	}

	if c.specs != nil {
		h.HasKube = true
		var err error
		in.Specs, err = c.specs.Read(ctx)
		h.KubeUp = err == nil
		h.KubeErr = err
	}
	in.NoAttribution = c.noAttribution(ctx, &in)
	if h.NVMLErr != nil || h.KubeErr != nil {
		now := c.cfg.Now()
		c.lastErr.note("nvml", h.NVMLErr, now)
		c.lastErr.note("kubernetes", h.KubeErr, now)
	}

	v := Join(in)
	c.unmatched.update(v.Unmatched)
	if !c.cfg.Health {
		v.KubeletHealth = nil
	}
	if in.NVMLUp {
		if c.cfg.Health {
			addHealth(&v, snap.Lost, snap.Taken)
		}
		if c.cfg.Events && in.Kubelet != nil {
			v.ContainerXids = c.xids.read()
		}
		if c.cfg.Chargeback && in.Kubelet != nil {
			v.Accounts, v.DeviceAccounts = c.energy.read(&v)
		}
	}
	return v, h
}

// noAttribution says why per-process attribution is off for every device,
// or "" with in.Owners filled.
func (c *Collector) noAttribution(ctx context.Context, in *Inputs) string {
	switch {
	case !c.cfg.PerProcess:
		return "disabled"
	case c.cfg.Owners == nil:
		return "no_procfs"
	}
	owners, err := c.cfg.Owners.Read(ctx)
	c.log.set("no-procfs", err != nil, "per-process attribution impossible: shared GPUs get device-wide numbers", "err", err)
	if err != nil {
		return "no_procfs"
	}
	if in.Specs != nil {
		in.Owners = owners
	}
	return ""
}

// Health is the per-source state of one scrape.
type Health struct {
	NVMLUp, KubeletUp, KubeUp     bool
	HasKubelet, HasKube           bool
	NVMLDuration, KubeletDuration float64
	// NVMLErr, KubeletErr and KubeErr say why a source is down (nil when
	// up): the status page shows them, the metrics count their reasons.
	NVMLErr, KubeletErr, KubeErr error
}

var (
	errNoPoll = errors.New("no NVML poll has finished yet")
	errStale  = errors.New("NVML poll overdue")
)

func (c *Collector) collect(ctx context.Context, ch chan<- prometheus.Metric) {
	v, h := c.Gather(ctx)
	c.devices.collect(ch, v.Devices)
	c.usage.collect(ch, v.Usage)
	c.attr.collect(ch, v.Attribution)
	c.unattr.collect(ch, v.Unattributed)
	c.requests.collect(ch, v.Requests)
	c.podReqs.collect(ch, v.PodRequests)
	c.workloads.collect(ch, v.Workloads)
	c.taints.collect(ch, v.DeviceTaints)
	c.nodeRes.collect(ch, v.Node)
	c.devHealth.collect(ch, v.Health)
	c.ctrHealth.collect(ch, v.ContainerHealth)
	c.kubHealth.collect(ch, v.KubeletHealth)
	c.ctrXid.collect(ch, v.ContainerXids)
	c.accounts.collect(ch, v.Accounts)
	c.devAcct.collect(ch, v.DeviceAccounts)
	c.emitHealth(ch, v, h)
}
