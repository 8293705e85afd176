package collector

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// ContainerAccount is what one container was given of one device since the
// exporter started: energy, GPU-seconds allocated and used.
type ContainerAccount struct {
	Namespace, Pod, Container string
	UUID, Model               string
	EnergyJoules              float64
	HasEnergy                 bool
	AllocatedSeconds          float64
	UsedSeconds               float64
}

// DeviceAccount is the energy of a GPU that went to no container: the GPU
// (or its MIG instances) held by nobody, or processes of no holder.
type DeviceAccount struct {
	Device                      *nvml.Reading
	UnallocatedJ, UnattributedJ float64
}

type accountKey struct{ ns, pod, ctr, uuid string }

type accountRow struct {
	ContainerAccount
	lastSeen time.Time
}

// energyLedger splits each GPU's energy between two accounting steps,
// which run at the sampler's pace off the scrape path (Collector.Account),
// among the containers holding it at the step, and counts GPU-seconds:
//
//   - a GPU held by one container: all of its energy;
//   - a MIG-enabled GPU: by each instance's share of the GPU's compute
//     slices (1g = 1/7 of an H100); instances nobody holds are unallocated;
//   - a GPU shared by time-slicing or MPS: by each holder's share of the
//     per-process SM time; the part of processes of no holder is
//     unattributed; while no process ran (or without per-process data) the
//     energy is split evenly among the holders, who reserved the GPU;
//   - a GPU nobody holds: unallocated.
//
// The containers' parts plus the unallocated and unattributed parts are the
// GPU's energy. Allocated GPU-seconds are the elapsed time times the part
// of the physical GPU held (1, the instance's slices, or 1/holders); used
// GPU-seconds weight it by the container's duty cycle. Everything is a
// counter of this exporter, so increase() over any range survives scrape
// gaps and restarts without double counting. Scrapes only read the counters
// (read), so how often and by how many scrapers they are read changes
// nothing, and a container that lives between two scrapes is billed for the
// steps it was seen at. A container's rows outlive it by retention, at most
// max rows.
type energyLedger struct {
	retention time.Duration
	max       int

	mu       sync.Mutex
	lastAt   time.Time
	lastJ    map[string]float64 // GPU UUID -> energy counter at the last step
	rows     map[accountKey]*accountRow
	unalloc  map[string]float64 // GPU UUID -> unallocated joules
	unattrib map[string]float64
	devSeen  map[string]bool
}

func newEnergyLedger(retention time.Duration, maxRows int) *energyLedger {
	return &energyLedger{retention: retention, max: maxRows, lastJ: map[string]float64{},
		rows: map[accountKey]*accountRow{}, unalloc: map[string]float64{}, unattrib: map[string]float64{}, devSeen: map[string]bool{}}
}

// migSlices is the compute slices of a MIG device's profile: a GPU
// instance's ("3g.40gb" -> 3, "1g.10gb+me" -> 1), or a compute instance's
// within it ("2c.4g.40gb" -> 2: two of the GPU instance's four).
func migSlices(profile string) float64 {
	first, rest, ok := strings.Cut(profile, ".")
	if !ok {
		return 1
	}
	unit := "g"
	if strings.HasSuffix(first, "c") && strings.Contains(rest, "g.") {
		unit = "c"
	}
	if v, err := strconv.Atoi(strings.TrimSuffix(first, unit)); err == nil && v > 0 && strings.HasSuffix(first, unit) {
		return float64(v)
	}
	return 1
}

// maxSlices is the compute slices of a whole GPU in MIG mode.
const maxSlices = 7

// account gives the time and energy since the previous step to the
// holders of this step's view; now is when the view's NVML readings were
// taken.
func (l *energyLedger) account(v *View, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	elapsed := 0.0
	if !l.lastAt.IsZero() && now.After(l.lastAt) {
		elapsed = now.Sub(l.lastAt).Seconds()
	}
	l.lastAt = now

	holders := map[string][]*Usage{}
	for i := range v.Usage {
		u := &v.Usage[i]
		holders[u.Device.UUID] = append(holders[u.Device.UUID], u)
	}
	instances := map[string][]*nvml.Reading{}
	for i := range v.Devices {
		if d := &v.Devices[i]; d.IsMIG() {
			instances[d.ParentUUID] = append(instances[d.ParentUUID], d)
		}
	}
	row := func(u *Usage) *accountRow {
		k := accountKey{u.Namespace, u.Pod, u.Container, u.Device.UUID}
		r := l.rows[k]
		if r == nil {
			r = &accountRow{ContainerAccount: ContainerAccount{Namespace: u.Namespace, Pod: u.Pod, Container: u.Container, UUID: u.Device.UUID, Model: u.Device.Name}}
			l.rows[k] = r
		}
		r.lastSeen = now
		return r
	}

	// GPU-seconds: every holder, whole GPUs and MIG instances.
	for _, hs := range holders {
		for _, u := range hs {
			part := 1 / float64(len(hs))
			if u.Device.IsMIG() {
				part = migSlices(u.Device.Profile) / maxSlices
			}
			r := row(u)
			r.AllocatedSeconds += elapsed * part
			if u.HasDutyCycle {
				r.UsedSeconds += elapsed * part * min(u.DutyCycle, 100) / 100
			}
		}
	}

	// Energy: whole GPUs carry the counter.
	for i := range v.Devices {
		d := &v.Devices[i]
		if d.IsMIG() || !d.Telemetry.EnergyJoules.OK {
			continue
		}
		l.devSeen[d.UUID] = true
		cur := d.Telemetry.EnergyJoules.V
		prev, seen := l.lastJ[d.UUID]
		l.lastJ[d.UUID] = cur
		delta := cur - prev
		if !seen || delta < 0 {
			delta = 0 // first sight, or a restarted counter: nothing to give yet
		}
		// Mark the holders' energy as known even when nothing is given.
		for _, u := range holders[d.UUID] {
			row(u).HasEnergy = true
		}
		for _, mig := range instances[d.UUID] {
			for _, u := range holders[mig.UUID] {
				row(u).HasEnergy = true
			}
		}
		if delta == 0 {
			continue
		}
		if d.MIGEnabled {
			given := 0.0
			for _, mig := range instances[d.UUID] {
				share := delta * migSlices(mig.Profile) / maxSlices
				hs := holders[mig.UUID]
				if len(hs) == 0 {
					continue
				}
				for _, u := range hs {
					row(u).EnergyJoules += share / float64(len(hs))
				}
				given += share
			}
			l.unalloc[d.UUID] += delta - given
			continue
		}
		hs := holders[d.UUID]
		switch {
		case len(hs) == 0:
			l.unalloc[d.UUID] += delta
		case len(hs) == 1 && hs[0].HasShare && hs[0].Share == 1:
			row(hs[0]).EnergyJoules += delta
		default:
			given, shared := 0.0, false
			for _, u := range hs {
				if u.HasShare {
					shared = true
					row(u).EnergyJoules += delta * u.Share
					given += delta * u.Share
				}
			}
			if !shared {
				// Idle, or no per-process data: the holders reserved it.
				for _, u := range hs {
					row(u).EnergyJoules += delta / float64(len(hs))
				}
				given = delta
			}
			l.unattrib[d.UUID] += delta - given
		}
	}

	prune(l.rows, func(r *accountRow) time.Time { return r.lastSeen }, now, l.retention, l.max)
}

// read returns the counters for a scrape: every container row kept, and
// the unallocated and unattributed energy of the view's devices.
func (l *energyLedger) read(v *View) ([]ContainerAccount, []DeviceAccount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ContainerAccount, 0, len(l.rows))
	for _, r := range l.rows {
		out = append(out, r.ContainerAccount)
	}
	// Unsorted: the registry orders the series it gathers, and sorting
	// hundreds of rows here on every scrape would cost more than the rest
	// of the ledger.
	var devs []DeviceAccount
	for i := range v.Devices {
		d := &v.Devices[i]
		if !l.devSeen[d.UUID] {
			continue
		}
		devs = append(devs, DeviceAccount{Device: d, UnallocatedJ: l.unalloc[d.UUID], UnattributedJ: l.unattrib[d.UUID]})
	}
	return out, devs
}

func accountValues(node string) func([]string, *ContainerAccount) []string {
	return func(b []string, c *ContainerAccount) []string {
		return append(b, node, c.Namespace, c.Pod, c.Container, c.UUID, c.Model, vendor)
	}
}

// accountFamilies are the chargeback counters per container.
var accountFamilies = []Family[ContainerAccount]{
	{
		Name:  Prefix + "_container_energy_joules_total",
		Help:  "Energy of the GPU given to the container in joules: all of a GPU it holds alone, its MIG instance's share of the GPU's slices, or its share of the per-process SM time on a shared GPU (evenly among holders while idle). Containers plus unallocated and unattributed energy add up to the GPU's.",
		Type:  prometheus.CounterValue,
		Value: func(c *ContainerAccount) (float64, bool) { return c.EnergyJoules, c.HasEnergy },
	},
	{
		Name:  Prefix + "_container_allocated_gpu_seconds_total",
		Help:  "GPU-seconds allocated to the container: time held times the part of the physical GPU held (1 whole, slices/7 for a MIG instance, 1/holders when time-sliced).",
		Type:  prometheus.CounterValue,
		Value: func(c *ContainerAccount) (float64, bool) { return c.AllocatedSeconds, true },
	},
	{
		Name:  Prefix + "_container_used_gpu_seconds_total",
		Help:  "GPU-seconds used by the container: allocated GPU-seconds weighted by its duty cycle.",
		Type:  prometheus.CounterValue,
		Value: func(c *ContainerAccount) (float64, bool) { return c.UsedSeconds, true },
	},
}

// deviceAccountFamilies are the energy no container was given.
var deviceAccountFamilies = []Family[DeviceAccount]{
	{
		Name:  Prefix + "_unallocated_energy_joules_total",
		Help:  "Energy of the GPU in joules while it (or its MIG instances) was held by no container.",
		Type:  prometheus.CounterValue,
		Value: func(d *DeviceAccount) (float64, bool) { return d.UnallocatedJ, true },
	},
	{
		Name:  Prefix + "_unattributed_energy_joules_total",
		Help:  "Energy of a shared GPU in joules that went to processes of no container holding it.",
		Type:  prometheus.CounterValue,
		Value: func(d *DeviceAccount) (float64, bool) { return d.UnattributedJ, true },
	},
}
