package gpu

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// fakeNvidiaSMI answers the nvidia-smi commands the harness runs from the
// simulated node of the scenario file, the way nvidia-smi answers them from
// a driver: each value read through the same NVML call the exporter makes,
// at the instant of the call, printed in nvidia-smi's CSV and text formats
// ("[N/A]" where the call is unsupported, the error nvidia-smi gives for a
// field it does not know). The utilization, power and GPM formulas depend
// only on the wall clock, so this process and the exporter's simulated
// node, started apart, read the same values.
func fakeNvidiaSMI(scenario string, args []string, stdout, stderr io.Writer) int {
	sc, err := simulate.Load(scenario)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	node, err := simulate.Start(sc, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer node.Close()
	if ret := node.NVML.Init(); ret != gonvml.SUCCESS {
		fmt.Fprintf(stderr, "NVIDIA-SMI has failed: %v\n", ret)
		return 9
	}
	dev, ret := node.NVML.DeviceGetHandleByIndex(0)
	if ret != gonvml.SUCCESS {
		fmt.Fprintln(stderr, "No devices were found")
		return 6
	}
	s := &stand{node: node, dev: dev, stdout: stdout, stderr: stderr}
	if len(args) > 0 && args[0] == "dmon" {
		return s.dmon(args[1:])
	}
	var query, apps string
	var format []string
	detail := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--query-gpu="):
			query = strings.TrimPrefix(a, "--query-gpu=")
		case strings.HasPrefix(a, "--query-compute-apps="):
			apps = strings.TrimPrefix(a, "--query-compute-apps=")
		case strings.HasPrefix(a, "--format="):
			format = strings.Split(strings.TrimPrefix(a, "--format="), ",")
			if format[0] != "csv" {
				fmt.Fprintf(stderr, "unsupported format %q\n", a)
				return 2
			}
		case a == "-q":
			detail = true
		case a == "-i" && i+1 < len(args):
			i++
			if args[i] != "0" {
				fmt.Fprintln(stderr, "No devices were found")
				return 6
			}
		default:
			fmt.Fprintf(stderr, "stand-in nvidia-smi: unsupported argument %q\n", a)
			return 2
		}
	}
	switch {
	case detail:
		return s.detail()
	case apps != "":
		return s.computeApps(strings.Split(apps, ","), format)
	case query != "":
		return s.queryGPU(strings.Split(query, ","), format)
	}
	fmt.Fprintln(stderr, "stand-in nvidia-smi: only --query-gpu, --query-compute-apps, -q and dmon are supported")
	return 2
}

// stand is the stand-in nvidia-smi's view of GPU 0.
type stand struct {
	node           *simulate.Node
	dev            gonvml.Device
	stdout, stderr io.Writer
}

const na = "[N/A]"

func mhz(v uint32, ret gonvml.Return) (string, string) {
	if ret != gonvml.SUCCESS {
		return na, "MHz"
	}
	return strconv.FormatUint(uint64(v), 10), "MHz"
}

func watts(mw uint32, ret gonvml.Return) (string, string) {
	if ret != gonvml.SUCCESS {
		return na, "W"
	}
	return fmt.Sprintf("%.2f", float64(mw)/1e3), "W"
}

func pctOf(v uint32, ret gonvml.Return) (string, string) {
	if ret != gonvml.SUCCESS {
		return na, "%"
	}
	return strconv.FormatUint(uint64(v), 10), "%"
}

// field returns one --query-gpu value and its unit; ok is false for a field
// nvidia-smi does not know.
func (s *stand) field(f string) (v, unit string, ok bool) {
	d := s.dev
	switch f {
	case "uuid":
		v, _ = d.GetUUID()
	case "name":
		v, _ = d.GetName()
	case "driver_version":
		v, _ = s.node.NVML.SystemGetDriverVersion()
	case "memory.total", "memory.used":
		mem, ret := d.GetMemoryInfo_v2()
		if ret != gonvml.SUCCESS {
			return na, "MiB", true
		}
		b := mem.Total
		if f == "memory.used" {
			b = mem.Used
		}
		v, unit = strconv.FormatUint(b>>20, 10), "MiB"
	case "utilization.gpu":
		// At the instant of the call, as the driver's last sample.
		v, unit = strconv.Itoa(int(math.Round(s.node.Utilization(0, time.Now())))), "%"
	case "utilization.memory":
		u, ret := d.GetUtilizationRates()
		v, unit = pctOf(u.Memory, ret)
	case "utilization.encoder":
		u, _, ret := d.GetEncoderUtilization()
		v, unit = pctOf(u, ret)
	case "utilization.decoder":
		u, _, ret := d.GetDecoderUtilization()
		v, unit = pctOf(u, ret)
	case "power.draw", "power.draw.average":
		v, unit = watts(d.GetPowerUsage())
	case "enforced.power.limit":
		v, unit = watts(d.GetEnforcedPowerLimit())
	case "temperature.gpu":
		t, ret := d.GetTemperature(gonvml.TEMPERATURE_GPU)
		v, _ = pctOf(t, ret) // printed without a unit
	case "temperature.memory":
		v = s.fieldValue(gonvml.FI_DEV_MEMORY_TEMP, 1)
	case "clocks.sm":
		v, unit = mhz(d.GetClockInfo(gonvml.CLOCK_SM))
	case "clocks.mem":
		v, unit = mhz(d.GetClockInfo(gonvml.CLOCK_MEM))
	case "clocks.max.sm":
		v, unit = mhz(d.GetMaxClockInfo(gonvml.CLOCK_SM))
	case "clocks.max.mem":
		v, unit = mhz(d.GetMaxClockInfo(gonvml.CLOCK_MEM))
	case "clocks_event_reasons.active", "clocks_throttle_reasons.active":
		bits, ret := d.GetCurrentClocksEventReasons()
		v = na
		if ret == gonvml.SUCCESS {
			v = fmt.Sprintf("0x%016X", bits)
		}
	case "mig.mode.current":
		cur, _, ret := d.GetMigMode()
		v = na
		if ret == gonvml.SUCCESS {
			v = map[bool]string{true: "Enabled", false: "Disabled"}[cur == gonvml.DEVICE_MIG_ENABLE]
		}
	case "remapped_rows.correctable", "remapped_rows.uncorrectable", "remapped_rows.pending", "remapped_rows.failure":
		corr, unc, pending, failed, ret := d.GetRemappedRows()
		if ret != gonvml.SUCCESS {
			return na, "", true
		}
		yes := map[bool]string{true: "Yes", false: "No"}
		v = map[string]string{
			"remapped_rows.correctable": strconv.Itoa(corr), "remapped_rows.uncorrectable": strconv.Itoa(unc),
			"remapped_rows.pending": yes[pending], "remapped_rows.failure": yes[failed],
		}[f]
	default:
		if v, ok := s.ecc(f); ok {
			return v, "", true
		}
		if name, found := strings.CutPrefix(f, "clocks_event_reasons_counters."); found {
			for _, r := range nvml.ClockEventReasons {
				if r.Field != 0 && r.Name == name {
					return s.fieldValue(r.Field, 1e-3), "us", true
				}
			}
		}
		return "", "", false
	}
	return v, unit, true
}

// ecc answers ecc.errors.{corrected,uncorrected}.{volatile,aggregate}.total.
func (s *stand) ecc(f string) (string, bool) {
	p := strings.Split(f, ".")
	if len(p) != 5 || p[0] != "ecc" || p[1] != "errors" || p[4] != "total" {
		return "", false
	}
	et := map[string]gonvml.MemoryErrorType{"corrected": gonvml.MEMORY_ERROR_TYPE_CORRECTED, "uncorrected": gonvml.MEMORY_ERROR_TYPE_UNCORRECTED}
	ct := map[string]gonvml.EccCounterType{"volatile": gonvml.VOLATILE_ECC, "aggregate": gonvml.AGGREGATE_ECC}
	e, ok1 := et[p[2]]
	c, ok2 := ct[p[3]]
	if !ok1 || !ok2 {
		return "", false
	}
	n, ret := s.dev.GetTotalEccErrors(e, c)
	if ret != gonvml.SUCCESS {
		return na, true
	}
	return strconv.FormatUint(n, 10), true
}

// fieldValue reads one NVML field value, scaled; "[N/A]" when the driver
// does not answer it.
func (s *stand) fieldValue(id uint32, scale float64) string {
	v := []gonvml.FieldValue{{FieldId: id}}
	if ret := s.dev.GetFieldValues(v); ret != gonvml.SUCCESS || gonvml.Return(v[0].NvmlReturn) != gonvml.SUCCESS {
		return na
	}
	var raw uint64
	for i := 7; i >= 0; i-- {
		raw = raw<<8 | uint64(v[0].Value[i])
	}
	return strconv.FormatFloat(math.Round(float64(raw)*scale), 'f', 0, 64)
}

func (s *stand) queryGPU(fields, format []string) int {
	header, units := true, true
	for _, o := range format[1:] {
		switch o {
		case "noheader":
			header = false
		case "nounits":
			units = false
		}
	}
	var names, values []string
	for _, f := range fields {
		v, unit, ok := s.field(f)
		if !ok {
			fmt.Fprintf(s.stderr, "Field \"%s\" is not a valid field to query.\n\n", f)
			return 2
		}
		name := f
		if unit != "" {
			name += " [" + unit + "]"
			if units && v != na {
				v += " " + unit
			}
		}
		names, values = append(names, name), append(values, v)
	}
	if header {
		fmt.Fprintln(s.stdout, strings.Join(names, ", "))
	}
	fmt.Fprintln(s.stdout, strings.Join(values, ", "))
	return 0
}

// computeApps lists the GPU's processes; a simulated process is named
// after its container.
func (s *stand) computeApps(fields, _ []string) int {
	procs, ret := s.dev.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS {
		fmt.Fprintf(s.stderr, "Failed to get compute apps: %v\n", ret)
		return 15
	}
	uuid, _ := s.dev.GetUUID()
	for _, p := range procs {
		var out []string
		for _, f := range fields {
			switch f {
			case "gpu_uuid":
				out = append(out, uuid)
			case "pid":
				out = append(out, strconv.FormatUint(uint64(p.Pid), 10))
			case "process_name":
				name, _ := s.node.ProcessContainer(p.Pid)
				out = append(out, name)
			case "used_memory":
				out = append(out, strconv.FormatUint(p.UsedGpuMemory>>20, 10))
			default:
				fmt.Fprintf(s.stderr, "Field \"%s\" is not a valid field to query.\n\n", f)
				return 2
			}
		}
		fmt.Fprintln(s.stdout, strings.Join(out, ", "))
	}
	return 0
}

// detail prints the lines of nvidia-smi -q the harness reads.
func (s *stand) detail() int {
	replays := na
	if n, ret := s.dev.GetPcieReplayCounter(); ret == gonvml.SUCCESS {
		replays = strconv.Itoa(n)
	}
	name, _ := s.dev.GetName()
	fmt.Fprintf(s.stdout, "\n==============NVSMI LOG==============\n\nAttached GPUs                             : 1\nGPU 00000000:00:00.0\n"+
		"    Product Name                          : %s\n    PCI\n        GPU Link Info\n"+
		"        Replays Since Reset               : %s\n        Replay Number Rollovers           : 0\n", name, replays)
	return 0
}

// dmon prints one line per second with the GPM metrics asked for last, as
// nvidia-smi dmon --gpm-metrics does, each the mean of the second before.
func (s *stand) dmon(args []string) int {
	count := 1
	var ids []gonvml.GpmMetricId
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-i":
		case "-c":
			count, _ = strconv.Atoi(args[i+1])
		case "--gpm-metrics":
			for _, f := range strings.Split(args[i+1], ",") {
				n, err := strconv.Atoi(f)
				if err != nil {
					fmt.Fprintf(s.stderr, "invalid GPM metric %q\n", f)
					return 2
				}
				ids = append(ids, gonvml.GpmMetricId(n))
			}
		default:
			fmt.Fprintf(s.stderr, "stand-in nvidia-smi dmon: unsupported argument %q\n", args[i])
			return 2
		}
	}
	head := []string{"# gpu", "sm", "mem"}
	for _, id := range ids {
		head = append(head, fmt.Sprintf("gpm%d", id))
	}
	fmt.Fprintln(s.stdout, strings.Join(head, "  "))
	for c := 0; c < count; c++ {
		time.Sleep(time.Second)
		now := time.Now()
		line := []string{"0", strconv.Itoa(int(math.Round(s.node.Utilization(0, now)))), "-"}
		for _, id := range ids {
			v, ok := s.node.GPM(0, -1, id, now.Add(-time.Second), now)
			if !ok {
				line = append(line, "-")
				continue
			}
			line = append(line, strconv.FormatFloat(v, 'f', 0, 64))
		}
		fmt.Fprintln(s.stdout, "    "+strings.Join(line, "     "))
	}
	return 0
}
