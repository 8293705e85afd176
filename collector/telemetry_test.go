package collector

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func TestHealthOf(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := func(f float64) nvml.Value { return nvml.Value{V: f, OK: true} }
	for _, c := range []struct {
		name           string
		r              nvml.Reading
		lost           bool
		status, reason string
	}{
		{"healthy", nvml.Reading{}, false, "healthy", "none"},
		{"lost", nvml.Reading{}, true, "failed", "lost"},
		{"recent xid 79", nvml.Reading{Xid: map[uint64]uint64{79: 1}, LastXid: now.Add(-time.Minute)}, false, "failed", "xid"},
		{"old xid 79", nvml.Reading{Xid: map[uint64]uint64{79: 1}, LastXid: now.Add(-time.Hour)}, false, "healthy", "none"},
		{"application xid 13", nvml.Reading{Xid: map[uint64]uint64{13: 5}, LastXid: now}, false, "healthy", "none"},
		{"remap failed", nvml.Reading{Health: nvml.Health{RemapFailed: v(1), RemapPending: v(1)}}, false, "failed", "row_remap_failure"},
		{"recovery", nvml.Reading{Health: nvml.Health{RecoveryAction: v(1)}}, false, "failed", "recovery_action"},
		{"uncorrectable", nvml.Reading{Health: nvml.Health{ECC: [2][2]nvml.Value{{}, {v(2), v(2)}}}}, false, "degraded", "uncorrectable_ecc"},
		{"aggregate only", nvml.Reading{Health: nvml.Health{ECC: [2][2]nvml.Value{{}, {v(0), v(7)}}}}, false, "healthy", "none"},
		{"pending", nvml.Reading{Health: nvml.Health{RemapPending: v(1)}}, false, "degraded", "pending_remap"},
		{"thermal", nvml.Reading{Telemetry: nvml.Telemetry{HasClockEvent: true, ClockEvents: gonvml.ClocksThrottleReasonHwThermalSlowdown}}, false, "degraded", "thermal_slowdown"},
		{"power cap is not a fault", nvml.Reading{Telemetry: nvml.Telemetry{HasClockEvent: true, ClockEvents: gonvml.ClocksEventReasonSwPowerCap}}, false, "healthy", "none"},
	} {
		st, rs := healthOf(&c.r, c.lost, now)
		if st != c.status || rs != c.reason {
			t.Errorf("%s: %s/%s, want %s/%s", c.name, st, rs, c.status, c.reason)
		}
	}
}

func TestXidLedgerAttributesToHolders(t *testing.T) {
	gpu := nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-a", Name: "H100"}}
	now := time.Unix(1_800_000_000, 0)
	l := newXidLedger(time.Hour, 3)
	view := func(xid uint64, holders ...string) *View {
		d := gpu
		d.Xid = map[uint64]uint64{79: xid}
		v := &View{Devices: []nvml.Reading{d}}
		for _, h := range holders {
			v.Usage = append(v.Usage, Usage{Namespace: "ns", Pod: h, Container: "c", Device: &v.Devices[0]})
		}
		return v
	}
	step := func(v *View, at time.Time) map[string]float64 {
		l.update(v, at)
		out := map[string]float64{}
		for _, r := range l.read() {
			out[r.Pod] = r.Count
		}
		return out
	}
	// First step: counts since start go to the holders of that step.
	got := step(view(1, "a", "b"), now)
	if got["a"] != 1 || got["b"] != 1 {
		t.Fatalf("first step: %v", got)
	}
	// Two events, then b left and c arrived before the next step: the
	// events go to a and b, who held the GPU when they happened.
	got = step(view(3, "a", "c"), now.Add(2*time.Second))
	if got["a"] != 3 || got["b"] != 3 || got["c"] != 0 {
		t.Fatalf("second step: %v, want a 3, b 3, c none", got)
	}
	// The next event happens while a and c hold it.
	got = step(view(4, "a", "c"), now.Add(4*time.Second))
	if got["a"] != 4 || got["c"] != 1 || got["b"] != 3 {
		t.Fatalf("third step: %v, want a 4, c 1, b kept at 3", got)
	}
	// b's series outlives it by the retention, then goes.
	got = step(view(4, "a", "c"), now.Add(time.Hour+2*time.Minute))
	if _, ok := got["b"]; ok || got["a"] != 4 {
		t.Fatalf("after retention: %v", got)
	}
	// A driver reload restarts the device count: new events still add.
	got = step(view(1, "a"), now.Add(2*time.Hour))
	if got["a"] != 5 {
		t.Fatalf("after a counter restart: a = %v, want 5", got["a"])
	}
	// The bound holds whatever the churn.
	for i := range 10 {
		l.update(view(uint64(2+i), string(rune('d'+i))), now.Add(3*time.Hour+time.Duration(i)*time.Second))
	}
	if len(l.rows) > 3 {
		t.Fatalf("%d rows kept, bound 3", len(l.rows))
	}
}

// TestXidJobDeletedBeforeNextStep: an Xid that ends a Job's pod, deleted
// before the next accounting step, is the pod's; the pod that replaces it
// on the same GPU before that step is not blamed.
func TestXidJobDeletedBeforeNextStep(t *testing.T) {
	gpu := nvml.Reading{DeviceInfo: nvml.DeviceInfo{UUID: "GPU-a", Name: "H100"}}
	l := newXidLedger(time.Hour, 10)
	now := time.Unix(1_800_000_000, 0)
	view := func(xid uint64, holder string) *View {
		d := gpu
		d.Xid = map[uint64]uint64{}
		if xid > 0 {
			d.Xid[79] = xid
		}
		v := &View{Devices: []nvml.Reading{d}}
		if holder != "" {
			v.Usage = []Usage{{Namespace: "batch", Pod: holder, Container: "c", Device: &v.Devices[0]}}
		}
		return v
	}
	l.update(view(0, "job-1"), now)
	l.update(view(1, "job-2"), now.Add(2*time.Second)) // job-1 hit and deleted, job-2 took the GPU
	got := map[string]float64{}
	for _, r := range l.read() {
		got[r.Pod] = r.Count
	}
	if got["job-1"] != 1 || got["job-2"] != 0 {
		t.Fatalf("Xid went to %v, want job-1 only", got)
	}
}

// A GPU with telemetry, health and an Xid: device series carry the
// device's values; the holders get the Xid and health, never the power.
func TestCollectTelemetryAndHealth(t *testing.T) {
	srv := dgxh100.New()
	srv.Devices = srv.Devices[:2]
	uuids := []string{"GPU-00000000-0000-4000-8000-000000000100", "GPU-00000000-0000-4000-8000-000000000101"}
	ev := &nvmltest.Events{}
	ev.Install(&srv.Interface)
	var energy nvmltest.EnergyCounter
	energy.Set(7_500_000)
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		dev.UUID = uuids[i]
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{Total: 80 << 30}, gonvml.SUCCESS }
		p := nvmltest.Profile{Events: gonvml.EventTypeXidCriticalError}
		if i == 1 {
			p = nvmltest.Profile{
				PowerMilliwatts: nvmltest.U32(512_000), PowerLimitMilliwatts: nvmltest.U32(700_000), EnergyMillijoules: energy.Read,
				TempGPU: nvmltest.U32(88), ClockEvents: nvmltest.U64(gonvml.ClocksThrottleReasonHwThermalSlowdown),
				ECC: &[2][2]uint64{{1, 3}, {0, 0}}, RemappedRows: &[2]int{0, 0}, Events: gonvml.EventTypeXidCriticalError,
			}
		}
		nvmltest.Apply(&dev.Device, p)
	}
	now := time.Unix(1_800_000_000, 0)
	s := nvml.NewSampler(srv, nvml.Config{Window: time.Minute, Now: func() time.Time { return now }, Telemetry: true, Health: true, Events: true})
	s.Poll()
	kubelet := staticKubelet{snap: &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "ml", Pod: "a", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuids[1] + "::0"}},
		{Namespace: "ml", Pod: "b", Container: "main", Resource: "nvidia.com/gpu", DeviceIDs: []string{uuids[1] + "::1"}},
	}}}
	c := New(Config{NodeName: "n", Telemetry: true, Health: true, Events: true, Now: func() time.Time { return now }}, s, kubelet, nil)
	lbl := `gpu_id="` + uuids[1] + `",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="n"`
	want := `
# HELP kube_gpu_power_usage_watts Power drawn by the GPU in watts (NVML GetPowerUsage).
# TYPE kube_gpu_power_usage_watts gauge
kube_gpu_power_usage_watts{` + lbl + `} 512
# HELP kube_gpu_energy_joules_total Energy the GPU consumed in joules since the driver was loaded (NVML GetTotalEnergyConsumption), with counts from before a driver reload the exporter saw added on top; Volta and newer.
# TYPE kube_gpu_energy_joules_total counter
kube_gpu_energy_joules_total{` + lbl + `} 7500
# HELP kube_gpu_ecc_errors_total ECC errors of the GPU's memory by error_type (corrected, uncorrected) and counter_type (volatile: since the driver loaded; aggregate: over the GPU's life) (NVML GetTotalEccErrors; only while ECC is enabled).
# TYPE kube_gpu_ecc_errors_total counter
kube_gpu_ecc_errors_total{counter_type="aggregate",error_type="corrected",` + lbl + `} 3
kube_gpu_ecc_errors_total{counter_type="aggregate",error_type="uncorrected",` + lbl + `} 0
kube_gpu_ecc_errors_total{counter_type="volatile",error_type="corrected",` + lbl + `} 1
kube_gpu_ecc_errors_total{counter_type="volatile",error_type="uncorrected",` + lbl + `} 0
# HELP kube_gpu_health_status 1 for the device's health: status healthy, degraded or failed, with the most severe reason (none, lost, xid, row_remap_failure, recovery_action, uncorrectable_ecc, pending_remap, thermal_slowdown).
# TYPE kube_gpu_health_status gauge
kube_gpu_health_status{gpu_id="` + uuids[0] + `",gpu_model="NVIDIA H100 80GB HBM3",gpu_vendor="nvidia",node="n",reason="none",status="healthy"} 1
kube_gpu_health_status{` + lbl + `,reason="thermal_slowdown",status="degraded"} 1
`
	names := []string{"kube_gpu_power_usage_watts", "kube_gpu_energy_joules_total", "kube_gpu_ecc_errors_total", "kube_gpu_health_status"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "kube_gpu_container_health_status"); n != 2 {
		t.Errorf("container health series = %d, want one per sharer", n)
	}
	// No family puts the shared GPU's power on its containers.
	if n := testutil.CollectAndCount(c, "kube_gpu_power_usage_watts"); n != 1 {
		t.Errorf("power series = %d, want 1 (the GPU with power)", n)
	}
	// Unsupported means absent: the first GPU has no power series, and
	// says so.
	if v, ok := sampleOf(t, c, "kube_gpu_family_supported", map[string]string{"gpu_id": uuids[0], "family": "power"}); !ok || v != 0 {
		t.Errorf("family_supported{power} on a GPU without it = %v (present %v), want 0", v, ok)
	}
	if v, ok := sampleOf(t, c, "kube_gpu_family_supported", map[string]string{"gpu_id": uuids[1], "family": "power"}); !ok || v != 1 {
		t.Errorf("family_supported{power} on a GPU with it = %v, want 1", v)
	}

	// An Xid 79 on the shared GPU: both sharers get it, and the GPU fails.
	ev.Inject(srv.Devices[1], 79, 0xFFFFFFFF, 0xFFFFFFFF)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.Account(ctx)
		if v, ok := sampleOf(t, c, "kube_gpu_container_xid_errors_total", map[string]string{"pod": "b", "xid": "79"}); ok && v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Xid 79 never reached pod b")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, ok := sampleOf(t, c, "kube_gpu_container_health_status", map[string]string{"pod": "a", "status": "failed", "reason": "xid"}); !ok || v != 1 {
		t.Error("pod a's GPU not failed after Xid 79")
	}
}

// sampleOf gathers c and returns the value of the one series of name whose
// labels include want.
func sampleOf(t *testing.T, c prometheus.Collector, name string, want map[string]string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// Two containers time-slicing a Hopper GPU: their SM activity, occupancy,
// tensor and DRAM values add up to the device's, and an unattributed
// process keeps its part; an exclusive GPU's holder gets the device's.
func TestProfilingSharedAddsUpToDevice(t *testing.T) {
	v := func(f float64) nvml.Value { return nvml.Value{V: f, OK: true} }
	shared := gpu(1, uuid1)
	shared.ProcessesOK = true
	shared.Processes = []nvml.Process{
		{PID: 10, SMUtil: 60, HasUtil: true}, {PID: 20, SMUtil: 20, HasUtil: true}, {PID: 30, SMUtil: 20, HasUtil: true},
	}
	shared.Profiling = []nvml.Value{v(0.5), v(0.4), v(0.3), v(0.2)}
	kubelet := &podresources.Snapshot{Containers: []podresources.ContainerDevices{
		{Namespace: "b", Pod: "a", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::0"}},
		{Namespace: "b", Pod: "b", Container: "w", Resource: "nvidia.com/gpu.shared", DeviceIDs: []string{uuid1 + "::1"}},
	}}
	look := lookupOf([3]string{"b", "a", "w"}, [3]string{"b", "b", "w"}, [3]string{"x", "rogue", "main"})
	view := Join(Inputs{
		Devices: []nvml.Reading{shared}, NVMLUp: true, Kubelet: kubelet, Specs: &Specs{Lookup: look},
		Matcher: resource.MustMatcher(resource.DefaultAll...),
		Owners:  map[uint32]OwnerResult{10: owner("b", "a", "w"), 20: owner("b", "b", "w"), 30: owner("x", "rogue", "main")},
	})
	for i, metric := range []string{"sm_active", "sm_occupancy", "tensor_active", "dram_active"} {
		f := containerProfilingFamilies[i]
		var sum float64
		for j := range view.Usage {
			got, ok := f.Value(&view.Usage[j])
			if !ok {
				t.Fatalf("%s: no value for %s", metric, view.Usage[j].Pod)
			}
			sum += got
		}
		device := shared.Profiling[i].V
		// The rogue process's 20 % of SM time stays unattributed.
		if want := device * 0.8; math.Abs(sum-want) > 1e-9 {
			t.Errorf("%s: sharers add up to %v, want %v (device %v less the unattributed part)", metric, sum, want, device)
		}
	}
	if got, _ := containerProfilingFamilies[0].Value(&view.Usage[0]); math.Abs(got-0.3) > 1e-9 {
		t.Errorf("pod a sm_active = %v, want 0.5 * 60/100", got)
	}

	// Without per-process data the sharers get no value rather than a copy.
	shared.ProcessesOK = false
	view = Join(Inputs{Devices: []nvml.Reading{shared}, NVMLUp: true, Kubelet: kubelet, Specs: &Specs{Lookup: look},
		Matcher: resource.MustMatcher(resource.DefaultAll...)})
	for j := range view.Usage {
		if got, ok := containerProfilingFamilies[0].Value(&view.Usage[j]); ok {
			t.Errorf("%s got %v without per-process data", view.Usage[j].Pod, got)
		}
	}

	// An exclusive holder gets the device's values.
	kubelet.Containers = kubelet.Containers[:1]
	view = Join(Inputs{Devices: []nvml.Reading{shared}, NVMLUp: true, Kubelet: kubelet, Matcher: resource.MustMatcher(resource.DefaultAll...)})
	if got, ok := containerProfilingFamilies[3].Value(&view.Usage[0]); !ok || got != 0.2 {
		t.Errorf("exclusive dram_active = %v (%v), want the device's 0.2", got, ok)
	}
}

// Every value of nvml.h's nvmlDeviceGpuRecoveryAction_t has its name; a
// value newer than the exporter is "other", never dropped.
func TestRecoveryActionNames(t *testing.T) {
	for v, want := range map[float64]string{
		0: "none", 1: "gpu_reset", 2: "node_reboot", 3: "drain_p2p", 4: "drain_and_reset",
		5: "recover_imex_domain", 6: "bus_reset", 7: "system_reboot", 8: "other", 1.5: "other", -1: "other",
	} {
		if got := recoveryActionName(v); got != want {
			t.Errorf("action %v = %q, want %q", v, got, want)
		}
	}
}

// Under ExceptionsOnly the support flags are served only where a family is
// not served and the clock event reasons only while active; every other
// family is untouched, and the series kept are those of the full table.
func TestExceptionsOnly(t *testing.T) {
	srv := dgxh100.New()
	srv.Devices = srv.Devices[:2]
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		dev.UUID = "GPU-" + string(rune('a'+i))
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{Total: 80 << 30}, gonvml.SUCCESS }
		p := nvmltest.Profile{TempGPU: nvmltest.U32(40), ClockEvents: nvmltest.U64(0)}
		if i == 1 {
			p = nvmltest.Profile{PowerMilliwatts: nvmltest.U32(512_000), TempGPU: nvmltest.U32(88),
				ClockEvents: nvmltest.U64(gonvml.ClocksThrottleReasonHwThermalSlowdown | gonvml.ClocksThrottleReasonSwPowerCap)}
		}
		nvmltest.Apply(&dev.Device, p)
	}
	s := nvml.NewSampler(srv, nvml.Config{Window: time.Minute, Telemetry: true, Health: true})
	s.Poll()
	cfg := Config{NodeName: "n", Telemetry: true, Health: true}
	full := New(cfg, s, nil, nil)
	cfg.ExceptionsOnly = true
	sparse := New(cfg, s, nil, nil)

	for name, want := range exceptionValues {
		all := samples(t, full, name)
		kept := samples(t, sparse, name)
		if len(all) == 0 || len(kept) == 0 || len(kept) == len(all) {
			t.Fatalf("%s: %d series in full, %d exceptions: the case must have both kinds", name, len(all), len(kept))
		}
		n := 0
		for series, v := range all {
			if v == want {
				n++
				if kv, ok := kept[series]; !ok || kv != v {
					t.Errorf("%s: exception %s = %v missing or changed (%v)", name, series, v, kv)
				}
			}
		}
		if n != len(kept) {
			t.Errorf("%s: %d exceptions served, full table has %d", name, len(kept), n)
		}
	}
	if v, ok := sampleOf(t, sparse, "kube_gpu_clock_event_active", map[string]string{"gpu_id": "GPU-b", "reason": "hw_thermal_slowdown"}); !ok || v != 1 {
		t.Errorf("active hw_thermal_slowdown = %v (present %v), want 1", v, ok)
	}
	if v, ok := sampleOf(t, sparse, "kube_gpu_family_supported", map[string]string{"gpu_id": "GPU-a", "family": "power"}); !ok || v != 0 {
		t.Errorf("family_supported{power} on a GPU without power = %v (present %v), want 0", v, ok)
	}
	if a, b := testutil.CollectAndCount(full, "kube_gpu_temperature_celsius"), testutil.CollectAndCount(sparse, "kube_gpu_temperature_celsius"); a != b || a == 0 {
		t.Errorf("temperature series %d full, %d sparse: other families must not change", a, b)
	}
}

// samples gathers c's series of name by their labels.
func samples(t *testing.T, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				var key strings.Builder
				for _, lp := range m.GetLabel() {
					key.WriteString(lp.GetName() + "=" + lp.GetValue() + ",")
				}
				out[key.String()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
