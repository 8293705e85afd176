package collector

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// ContainerXid is the Xid count of one code on a device a container held.
type ContainerXid struct {
	Namespace, Pod, Container string
	UUID, Model, Xid          string
	Count                     float64
}

type devXid struct {
	uuid string
	code uint64
}

type ctrXid struct {
	ns, pod, ctr, uuid, model string
	code                      uint64
}

type xidRow struct {
	count    uint64
	lastSeen time.Time
}

// holderKey is one container holding one device.
type holderKey struct{ ns, pod, ctr string }

// xidLedger gives Xid events to the containers that held the device when
// they happened. It runs at each accounting step, off the scrape path
// (Collector.Account): the growth of a device's count since the previous
// step goes to every container that held the device at the previous step,
// the last assignment known before the events (an event on a device hits
// every job on it). So a Job's pod that an Xid ends, and that is deleted
// before the next step, is still named; a pod that takes the GPU over after
// the event is not. At the first step, with no assignment before it, the
// counts since start go to the holders of that step. A container's rows
// outlive it by retention, so the increase is scraped after the pod is
// gone, and at most max rows are kept whatever the churn.
type xidLedger struct {
	retention time.Duration
	max       int

	mu      sync.Mutex
	prev    map[devXid]uint64
	holders map[string][]holderKey // device UUID -> holders at the last step
	stepped bool
	rows    map[ctrXid]*xidRow
}

func newXidLedger(retention time.Duration, maxRows int) *xidLedger {
	return &xidLedger{retention: retention, max: maxRows, prev: map[devXid]uint64{}, rows: map[ctrXid]*xidRow{}}
}

// update takes one accounting step's view.
func (l *xidLedger) update(v *View, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	holders := map[string][]holderKey{}
	for i := range v.Usage {
		u := &v.Usage[i]
		holders[u.Device.UUID] = append(holders[u.Device.UUID], holderKey{u.Namespace, u.Pod, u.Container})
	}
	before := l.holders
	if !l.stepped {
		before = holders
	}
	next := make(map[devXid]uint64, len(l.prev))
	for i := range v.Devices {
		d := &v.Devices[i]
		for code, n := range d.Xid {
			k := devXid{d.UUID, code}
			next[k] = n
			delta := n
			if p, ok := l.prev[k]; ok && p <= n {
				delta = n - p
			}
			if delta == 0 {
				continue
			}
			for _, h := range before[d.UUID] {
				ck := ctrXid{h.ns, h.pod, h.ctr, d.UUID, d.Name, code}
				r := l.rows[ck]
				if r == nil {
					r = &xidRow{lastSeen: now}
					l.rows[ck] = r
				}
				r.count += delta
			}
		}
	}
	l.prev, l.holders, l.stepped = next, holders, true
	// Rows of containers still holding the device stay fresh.
	for k, r := range l.rows {
		if slices.Contains(holders[k.uuid], holderKey{k.ns, k.pod, k.ctr}) {
			r.lastSeen = now
		}
	}
	prune(l.rows, func(r *xidRow) time.Time { return r.lastSeen }, now, l.retention, l.max)
}

// read returns the rows to expose, sorted.
func (l *xidLedger) read() []ContainerXid {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ContainerXid, 0, len(l.rows))
	for k, r := range l.rows {
		out = append(out, ContainerXid{Namespace: k.ns, Pod: k.pod, Container: k.ctr, UUID: k.uuid, Model: k.model,
			Xid: xidLabel(k.code), Count: float64(r.count)})
	}
	sortXids(out)
	return out
}

func sortXids(out []ContainerXid) {
	resource.SortByKey(out, func(c *ContainerXid) resource.Key {
		return resource.Key{Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Name: c.UUID + "\x00" + c.Xid}
	})
}

func containerXidValues(node string) func([]string, *ContainerXid) []string {
	return func(b []string, c *ContainerXid) []string {
		return append(b, node, c.Namespace, c.Pod, c.Container, c.UUID, c.Model, vendor)
	}
}

var containerXidFamilies = []Family[ContainerXid]{{
	Name:   Prefix + "_container_xid_errors_total",
	Help:   "Xid errors on the device the container held, by Xid code: a device's new events go to the containers that held it when they happened (the last assignment read from the kubelet before them), and stay for a while after the container is gone.",
	Type:   prometheus.CounterValue,
	Labels: []string{"xid"},
	Each:   func(c *ContainerXid, emit func(float64, ...string)) { emit(c.Count, c.Xid) },
}}
