// Package statuspage is the exporter's page at /: the node's GPUs as one
// table for a person at the node, rendered from the snapshot a scrape reads
// (collector.Gather), so a page view makes no NVML or kubelet call.
package statuspage

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// Info is what the page shows besides the snapshot.
type Info struct {
	Node, Version string
	// MetricsPath is linked from the page.
	MetricsPath string
	// Now is when the page is rendered.
	Now time.Time
	// Refresh reloads the page every so many seconds; 0 does not.
	Refresh int
	// Profiling links /debug/pprof/ (--web.enable-pprof).
	Profiling bool
}

// Page is everything the template prints, already formatted: the template
// only lays it out.
type Page struct {
	Info
	Rendered  string
	GPUs      []Row
	Resources []Resource
	Sources   []SourceLine
	// NoDevices says why the table is empty.
	NoDevices string
}

// Row is one GPU, or one MIG instance listed under its GPU.
type Row struct {
	MIG                   bool
	ID, Model, UUID       string
	Holders               []string
	Duty, SM              string
	DutyPct               float64 // for the meter; -1 when unknown
	Memory                string
	MemPct                float64 // -1 when unknown
	Power, Temp           string
	Health, Reason, Class string
	Xid                   string
}

// Resource is one GPU resource of the node: what pods request of it and
// what the node can give.
type Resource struct {
	Name, Requested, Allocatable string
}

// SourceLine is one source's line: whether it is up, its latest error
// (why it is down, or what it last failed with), and its errors by reason.
type SourceLine struct {
	Name, State, Class, LastErr, Errors string
}

const none = "—"

// Build turns one scrape's view and the sources' state into the page. It is
// a pure function: the table tests drive it with literal views.
func Build(v collector.View, sources []collector.SourceState, info Info) Page {
	p := Page{Info: info, Rendered: stamp(info.Now)}
	holders := map[string][]string{}
	for _, u := range v.Usage {
		holders[u.Device.UUID] = append(holders[u.Device.UUID], u.Namespace+"/"+u.Pod+"/"+u.Container)
	}
	for _, u := range v.Unattributed {
		who := "host process (no pod)"
		if u.Pod != "" {
			who = u.Namespace + "/" + u.Pod + " (not requested)"
		}
		holders[u.Device.UUID] = append(holders[u.Device.UUID], who)
	}
	health := map[string]collector.DeviceHealth{}
	for _, h := range v.Health {
		health[h.Device.UUID] = h
	}

	gpus, instances := []*nvml.Reading{}, map[string][]*nvml.Reading{}
	for i := range v.Devices {
		d := &v.Devices[i]
		if d.IsMIG() {
			instances[d.ParentUUID] = append(instances[d.ParentUUID], d)
		} else {
			gpus = append(gpus, d)
		}
	}
	// Lost GPUs are gone from NVML's list but not from the health rows.
	for _, h := range v.Health {
		if h.Reason == "lost" {
			gpus = append(gpus, h.Device)
		}
	}
	slices.SortStableFunc(gpus, func(a, b *nvml.Reading) int { return cmp.Compare(a.Index, b.Index) })
	for _, g := range gpus {
		h, hasHealth := health[g.UUID]
		p.GPUs = append(p.GPUs, row(g, holders[g.UUID], h, hasHealth))
		mig := instances[g.UUID]
		slices.SortFunc(mig, func(a, b *nvml.Reading) int {
			return cmp.Or(cmp.Compare(a.GPUInstance, b.GPUInstance), cmp.Compare(a.ComputeInstance, b.ComputeInstance))
		})
		for _, d := range mig {
			r := row(d, holders[d.UUID], h, hasHealth) // an instance is as healthy as its GPU
			p.GPUs = append(p.GPUs, r)
		}
	}
	if len(p.GPUs) == 0 {
		p.NoDevices = "No GPU found."
		for _, s := range sources {
			if s.Name == "nvml" && !s.Up {
				p.NoDevices = "NVML is down: no GPU readings."
			}
		}
	}

	requested := map[string]float64{}
	for _, r := range v.PodRequests {
		requested[r.Resource] += r.Request
	}
	for _, n := range v.Node {
		r := Resource{Name: n.Resource, Requested: number(requested[n.Resource]), Allocatable: none}
		if n.HasAllocatable {
			r.Allocatable = number(n.Allocatable)
		}
		p.Resources = append(p.Resources, r)
	}

	for _, s := range sources {
		l := SourceLine{Name: s.Name, State: "up", Class: "ok"}
		if !s.Up {
			l.State, l.Class = "down", "bad"
		}
		switch {
		case s.LastErr != "" && !s.LastErrAt.IsZero():
			l.LastErr = s.LastErr + " (" + stamp(s.LastErrAt) + ")"
		case s.LastErr != "":
			l.LastErr = s.LastErr
		default:
			l.LastErr = s.Err
		}
		var errs []string
		for _, reason := range slices.Sorted(maps.Keys(s.Errors)) {
			if s.Errors[reason] == 0 {
				continue
			}
			errs = append(errs, fmt.Sprintf("%s %d", reason, s.Errors[reason]))
		}
		l.Errors = strings.Join(errs, ", ")
		p.Sources = append(p.Sources, l)
	}
	return p
}

func row(d *nvml.Reading, holders []string, h collector.DeviceHealth, hasHealth bool) Row {
	r := Row{MIG: d.IsMIG(), ID: fmt.Sprint(d.Index), Model: d.Name, UUID: d.UUID, Holders: holders,
		Duty: none, DutyPct: -1, SM: none, Memory: none, MemPct: -1, Power: none, Temp: none,
		Health: none, Class: "unknown"}
	if r.MIG {
		r.ID = fmt.Sprintf("%d / GI %d CI %d", d.Index, d.GPUInstance, d.ComputeInstance)
		r.Model = "MIG " + d.Profile
	}
	if d.HasDutyCycle {
		r.Duty, r.DutyPct = percent(d.DutyCycle), d.DutyCycle
	}
	if len(d.Profiling) > nvml.ProfSMActive && d.Profiling[nvml.ProfSMActive].OK {
		r.SM = percent(100 * d.Profiling[nvml.ProfSMActive].V)
	}
	switch {
	case d.HasMemory && d.MemoryTotal > 0:
		r.Memory = fmt.Sprintf("%s / %s GiB", gib(d.MemoryUsed), gib(d.MemoryTotal))
		r.MemPct = 100 * float64(d.MemoryUsed) / float64(d.MemoryTotal)
	case d.MemoryTotal > 0:
		r.Memory = fmt.Sprintf("%s / %s GiB", none, gib(d.MemoryTotal))
	}
	t := &d.Telemetry
	switch {
	case t.PowerWatts.OK && t.PowerLimitWatts.OK:
		r.Power = fmt.Sprintf("%.0f / %.0f W", t.PowerWatts.V, t.PowerLimitWatts.V)
	case t.PowerWatts.OK:
		r.Power = fmt.Sprintf("%.0f W", t.PowerWatts.V)
	}
	if t.TempGPU.OK {
		r.Temp = fmt.Sprintf("%.0f °C", t.TempGPU.V)
	}
	if hasHealth {
		r.Health, r.Class = h.Status, h.Status
		if h.Reason != "none" {
			r.Reason = h.Reason
		}
	}
	r.Xid = xids(d)
	return r
}

// xids lists a device's Xid codes with their counts, and when the latest
// arrived (NVML does not say which code that was when there are several).
func xids(d *nvml.Reading) string {
	if len(d.Xid) == 0 {
		return ""
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(d.Xid)) {
		parts = append(parts, fmt.Sprintf("%d ×%d", code, d.Xid[code]))
	}
	s := strings.Join(parts, ", ")
	if !d.LastXid.IsZero() {
		s += "; last " + stamp(d.LastXid)
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func percent(v float64) string { return fmt.Sprintf("%.0f %%", v) }

func gib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<30)) }

func number(v float64) string { return fmt.Sprintf("%g", v) }
