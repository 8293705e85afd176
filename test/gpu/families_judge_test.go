package gpu

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestFamilyJudges checks that each family comparison flags a miss, so a
// real run cannot pass on a judge that always says yes.
func TestFamilyJudges(t *testing.T) {
	const uuid = "GPU-1"
	s := func(name string, v float64, kv ...string) series {
		l := map[string]string{"gpu_id": uuid}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return series{name: name, labels: l, value: v}
	}
	power := famCheck{what: "power", metric: "kube_gpu_power_usage_watts", scale: 1, abs: 10, rel: 0.1}
	memTemp := famCheck{what: "memory temperature", metric: "kube_gpu_temperature_celsius", labels: map[string]string{"sensor": "memory"}, scale: 1, abs: 2}
	for _, c := range []struct {
		name          string
		check         famCheck
		before, after string
		ss            []series
		want          bool
	}{
		{"power in range", power, "300", "310", []series{s("kube_gpu_power_usage_watts", 305)}, true},
		{"power off", power, "300", "310", []series{s("kube_gpu_power_usage_watts", 400)}, false},
		{"power missing", power, "300", "310", nil, false},
		{"unsupported and absent", memTemp, "[N/A]", "[N/A]", nil, true},
		{"unsupported but served", memTemp, "[N/A]", "[N/A]", []series{s("kube_gpu_temperature_celsius", 0, "sensor", "memory")}, false},
		{"wrong label served", memTemp, "40", "40", []series{s("kube_gpu_temperature_celsius", 40, "sensor", "gpu")}, false},
		{"yes/no", famCheck{metric: "kube_gpu_row_remap_pending", scale: 1}, "Yes", "Yes", []series{s("kube_gpu_row_remap_pending", 0)}, false},
	} {
		r := judgeScalar(c.check, "f", c.before, c.after, c.ss, uuid)
		if r.ok == nil || *r.ok != c.want {
			t.Errorf("%s: judged %v, want %v (%+v)", c.name, r.ok, c.want, r)
		}
	}

	active := func(reason string, v float64) series { return s("kube_gpu_clock_event_active", v, "reason", reason) }
	all := func(idle float64) []series {
		var ss []series
		for _, r := range []string{"gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
			"sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting"} {
			v := 0.0
			if r == "gpu_idle" {
				v = idle
			}
			ss = append(ss, active(r, v))
		}
		return ss
	}
	if r := judgeClockEvents("0x1", "0x1", all(1), uuid); !*r.ok {
		t.Errorf("idle on both sides: %+v", r)
	}
	if r := judgeClockEvents("0x1", "0x1", all(0), uuid); *r.ok {
		t.Errorf("idle missed: %+v", r)
	}
	if r := judgeClockEvents("0x1", "0x0", all(0), uuid); !*r.ok {
		t.Errorf("a bit that changed between the readings is not judged: %+v", r)
	}
	if r := judgeClockEvents("0x0", "0x0", all(0)[1:], uuid); *r.ok {
		t.Errorf("a reason not served passed: %+v", r)
	}

	t0 := time.Unix(1000, 0)
	flat := []smiSample{{at: t0, value: 100}, {at: t0.Add(5 * time.Second), value: 100}, {at: t0.Add(10 * time.Second), value: 100}}
	energy := func(j float64) []series { return []series{s("kube_gpu_energy_joules_total", j)} }
	if r := judgeEnergy(energy(0), energy(1020), uuid, flat, t0, t0.Add(10*time.Second)); !*r.ok {
		t.Errorf("energy within 2%%: %+v", r)
	}
	if r := judgeEnergy(energy(0), energy(900), uuid, flat, t0, t0.Add(10*time.Second)); *r.ok {
		t.Errorf("energy 10%% short passed: %+v", r)
	}

	apps := []app{{"1", "/opt/ptxload", 2560}, {"2", "ns/p/c", 100}}
	holder := func(_, name string) bool { return name == "ns/p/c" }
	um := func(mib float64) []series { return []series{s("kube_gpu_unattributed_memory_used_bytes", mib*(1<<20))} }
	if r := judgeProcessMemory(um(2560), uuid, apps, nil, holder, false); !*r.ok {
		t.Errorf("process memory equal: %+v", r)
	}
	if r := judgeProcessMemory(um(2660), uuid, apps, nil, holder, false); *r.ok {
		t.Errorf("holder's process counted as unattributed passed: %+v", r)
	}
	if r := judgeProcessMemory(nil, uuid, apps[1:], nil, holder, false); *r.ok {
		t.Errorf("no non-holder process to compare passed: %+v", r)
	}

	gpm := map[int]float64{2: 40, 3: 20, 5: 10, 10: 30}
	good := []series{s("kube_gpu_sm_active_ratio", .41), s("kube_gpu_sm_occupancy_ratio", .2), s("kube_gpu_tensor_active_ratio", .1), s("kube_gpu_dram_active_ratio", .3)}
	for _, r := range judgeGPM(good, uuid, gpm, nil) {
		if !*r.ok {
			t.Errorf("GPM equal: %+v", r)
		}
	}
	if rows := judgeGPM(good[1:], uuid, gpm, nil); *rows[0].ok {
		t.Errorf("SM active missing passed: %+v", rows[0])
	}
	noGPM := []series{s("kube_gpu_family_supported", 0, "family", "gpm")}
	for _, r := range judgeGPM(noGPM, uuid, nil, errors.New("not supported")) {
		if !*r.ok {
			t.Errorf("no GPM on either side: %+v", r)
		}
	}
	if rows := judgeGPM(append(noGPM, good[0]), uuid, nil, errors.New("not supported")); *rows[0].ok {
		t.Errorf("GPM served where nvidia-smi has none passed: %+v", rows[0])
	}
}

// TestDmonLines reads dmon's GPM columns (the last of each line) and picks
// the sample of the second around an instant.
func TestDmonLines(t *testing.T) {
	for line, want := range map[string]string{
		"# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec    jpg    ofa   mclk   pclk  gpm:sm gpm:smocc gpm:anyta gpm:dram": "",
		"    0    310     45     50    100      0      0      0      0      0   2619   1980     41       20        0       3":     "map[2:41 3:20 5:0 10:3]",
		"    0":              "",
		"    0  1   2  3  -": "error",
	} {
		vals, ok, err := parseDmonLine(line)
		got := ""
		switch {
		case err != nil:
			got = "error"
		case ok:
			got = fmt.Sprint(vals)
		}
		if got != want {
			t.Errorf("%q: %s, want %s", line, got, want)
		}
	}
	t0 := time.Unix(1000, 0)
	samples := []dmonSample{{t0, map[int]float64{2: 1}}, {t0.Add(time.Second), map[int]float64{2: 2}}, {t0.Add(2 * time.Second), map[int]float64{2: 3}}}
	if got := dmonAt(samples, t0.Add(1500*time.Millisecond)); got[2] != 3 {
		t.Errorf("sample around 1.5s: %v, want the one printed at 2s", got)
	}
	if got := dmonAt(samples, t0.Add(5*time.Second)); got[2] != 3 {
		t.Errorf("sample after the last: %v, want the last", got)
	}
}
