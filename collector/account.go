package collector

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// background is what the accounting steps keep for the scrapes: the
// kubelet's last answer, read off the scrape path, and the NVML poll the
// ledgers last took.
type background struct {
	mu   sync.Mutex
	read bool // a step has read the kubelet: scrapes serve its answer
	snap *podresources.Snapshot
	err  error
	dur  float64
	last *nvml.Snapshot // the poll the ledgers last took
}

// Run accounts energy, GPU-seconds and Xid events at the sampler's pace
// until ctx ends: every interval, a step takes the sampler's newest poll,
// if it has not taken it yet. interval should be at most the sampler's; a
// shorter one only lowers the delay between a poll and its step.
func (c *Collector) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.Account(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Account runs one accounting step: with the sampler's newest poll, it
// reads the kubelet's assignment (the one kubelet call, at most once per
// poll and shared with nothing else, within the socket's rate limit), the
// Kubernetes API's view and the processes' owners, joins them as a scrape
// would, and gives the poll's energy, GPU-seconds and new Xid events to the
// containers of that moment. Scrapes then only read the ledgers and the
// kubelet answer kept here. A step on a poll already taken does nothing.
func (c *Collector) Account(ctx context.Context) {
	snap, err := c.nvml.Read(ctx)
	if err != nil || snap == nil {
		return
	}
	c.bg.mu.Lock()
	last := c.bg.last
	c.bg.mu.Unlock()
	if snap == last {
		return // every poll is a new snapshot
	}
	in := Inputs{Matcher: c.cfg.Matcher, Devices: snap.Devices, NVMLUp: true}
	if c.kubelet != nil {
		ks, dur, err := c.readKubelet(ctx)
		c.bg.mu.Lock()
		c.bg.read, c.bg.snap, c.bg.err, c.bg.dur = true, ks, err, dur
		c.bg.mu.Unlock()
		if err == nil {
			in.Kubelet = ks
		}
	}
	// Without the kubelet nobody is known to hold anything: the ledgers
	// skip the step rather than bill the GPUs to nobody. With neither
	// ledger on, the step only refreshes the kubelet's answer.
	if in.Kubelet != nil && (c.cfg.Events || c.cfg.Chargeback) {
		if c.specs != nil {
			in.Specs, _ = c.specs.Read(ctx)
		}
		in.NoAttribution = c.noAttribution(ctx, &in)
		v := Join(in)
		if c.cfg.Events {
			c.xids.update(&v, snap.Taken)
		}
		if c.cfg.Chargeback {
			c.energy.account(&v, snap.Taken)
		}
	}
	c.bg.mu.Lock()
	c.bg.last = snap
	c.bg.mu.Unlock()
}

// readKubelet calls the kubelet and logs a change of its state.
func (c *Collector) readKubelet(ctx context.Context) (*podresources.Snapshot, float64, error) {
	start := c.cfg.Now()
	ks, err := c.kubelet.Read(ctx)
	dur := c.cfg.Now().Sub(start).Seconds()
	// A call cancelled (its scrape gone, or the exporter shutting down)
	// says nothing about the kubelet: no outage is logged.
	if !errors.Is(ctx.Err(), context.Canceled) {
		c.log.set("kubelet-down", err != nil, "kubelet pod-resources unavailable; serving node-level metrics only", "err", err)
		c.lastErr.note("kubelet", err, start)
	}
	return ks, dur, err
}

// kubeletView is the kubelet's assignment for a scrape: the one the last
// accounting step read, or, before any step has, a call of its own.
func (c *Collector) kubeletView(ctx context.Context) (*podresources.Snapshot, float64, error) {
	c.bg.mu.Lock()
	read, snap, err, dur := c.bg.read, c.bg.snap, c.bg.err, c.bg.dur
	c.bg.mu.Unlock()
	if read {
		return snap, dur, err
	}
	return c.readKubelet(ctx)
}
