// Package simulate runs the exporter on a node that exists only in memory:
// go-nvml's mock NVML server for the GPUs and a pod-resources gRPC server on
// a private socket for the kubelet. The exporter's real code paths (sampler,
// gRPC client, collector) run unchanged against it, so people without a GPU
// see exactly what a GPU node would show.
package simulate

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

//go:embed builtin.yaml
var builtin []byte

// Builtin returns the built-in scenario: 8 H100s with a training pod, an
// inference pod, an idle notebook, two pods time-slicing one GPU and one
// GPU allocated to nobody.
func Builtin() *Scenario {
	s, err := Parse(builtin)
	if err != nil {
		panic(fmt.Sprintf("built-in scenario: %v", err))
	}
	return s
}

// Scenario describes a simulated node. The YAML schema is documented in
// docs/simulation.md.
type Scenario struct {
	Node  string `yaml:"node"`
	Model string `yaml:"model"`
	GPUs  int    `yaml:"gpus"`
	// MIG partitions GPUs into MIG instances: GPU index -> the profiles of
	// its instances, such as ["1g.10gb", "3g.40gb"]. Instance j of GPU g is
	// the device "g/j".
	MIG         map[int][]string    `yaml:"mig"`
	Pods        []Pod               `yaml:"pods"`
	Allocatable map[string][]string `yaml:"allocatable"`
	// DRA, when set, has a Dynamic Resource Allocation driver publish
	// devices in a ResourceSlice of this node; containers get them through
	// claims (Container.Claim) instead of the device plugin.
	DRA *DRA `yaml:"dra"`
	// GPUState sets what a GPU reports beyond utilization and memory
	// (power, temperatures, clocks, throttling, memory errors, Xid
	// events): GPU index -> its state. GPUs left out report a healthy GPU.
	GPUState map[int]GPUState `yaml:"gpuState"`
	// Driver is the driver branch the node runs, "R535", "R550", "R570" or
	// "R580" (default: the newest): NVML fields newer than it answer as an
	// older driver answers a field ID it does not know.
	Driver string `yaml:"driver"`
	// MIGMonitor gives the exporter MIG-monitor privilege (the NVIDIA
	// container toolkit's NVIDIA_MIG_MONITOR_DEVICES=all). Without it, as
	// in a default container, NVML withholds a MIG-enabled GPU's own memory
	// (NO_PERMISSION) and reports only the events that affect all its
	// instances.
	MIGMonitor bool `yaml:"migMonitor"`
}

// driverBranches are the branches a scenario may name.
var driverBranches = map[string]int{"R535": 535, "R550": 550, "R570": 570, "R580": 580}

// driverBranch is the scenario's driver branch as a number, 0 for the
// newest.
func (s *Scenario) driverBranch() int { return driverBranches[s.Driver] }

// DRA is the node's DRA driver and the devices it publishes.
type DRA struct {
	// Driver is the driver name; default gpu.nvidia.com.
	Driver string `yaml:"driver"`
	// Devices are GPU indexes ("3") or MIG instances ("2/0").
	Devices []string `yaml:"devices"`
}

// DefaultDRADriver is the DRA driver a scenario's dra section defaults to.
const DefaultDRADriver = resource.DefaultDRADriver

// Pod is one pod of the scenario.
type Pod struct {
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	// Labels and Controller are the pod's as the API server holds them,
	// which name its workload (a StatefulSet, a PyTorchJob's labels).
	Labels     map[string]string `yaml:"labels"`
	Controller *Controller       `yaml:"controller"`
	Containers []Container       `yaml:"containers"`
}

// Controller is the object that created a pod: its controller owner
// reference.
type Controller struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string `yaml:"name"`
}

// Container is one container and the devices it holds.
type Container struct {
	Name     string `yaml:"name"`
	Resource string `yaml:"resource"`
	// Devices are GPU indexes ("3"), replicas of a shared GPU ("6::1") or
	// MIG instances ("2/0": instance 0 of GPU 2).
	Devices []string `yaml:"devices"`
	// Claim, when set, names the ResourceClaim through which the container
	// got Devices from the scenario's DRA driver; Resource is then empty.
	Claim string `yaml:"claim"`
	// UnallocatedDevices are GPUs the container uses without having been
	// allocated them (NVIDIA_VISIBLE_DEVICES=all in its image, say): real
	// use that no holder accounts for.
	UnallocatedDevices []string `yaml:"unallocatedDevices"`
	Utilization        Wave     `yaml:"utilization"`
	MemoryGiB          float64  `yaml:"memoryGiB"`
	// GPM is how much of the GPU the container's busy time uses, as GPU
	// Performance Monitoring reports it on Hopper and newer.
	GPM GPMProfile `yaml:"gpm"`
}

// Wave is a utilization that moves as a sine: mean ± swing over period.
type Wave struct {
	Mean   float64  `yaml:"mean"`
	Swing  float64  `yaml:"swing"`
	Period Duration `yaml:"period"`
}

// Duration reads "5m"-style durations from YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Load reads a scenario file.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes and validates a scenario. Unknown fields and wrong types are
// reported with their line; semantic errors with the field's path.
func Parse(data []byte) (*Scenario, error) {
	var s Scenario
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if s.Node == "" {
		s.Node = "sim-node"
	}
	if s.Model == "" {
		s.Model = "A100-SXM4-40GB"
	}
	if s.DRA != nil && s.DRA.Driver == "" {
		s.DRA.Driver = DefaultDRADriver
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeviceRef is a parsed "3", "6::1" or "2/0" device entry.
type DeviceRef struct {
	GPU, Replica int // Replica is -1 unless a replica of a shared GPU or MIG instance
	MIG          int // MIG instance of the GPU, -1 for a whole GPU
}

// ParseDevice parses a scenario device entry.
func ParseDevice(s string) (DeviceRef, error) {
	if idx, inst, ok := strings.Cut(s, "/"); ok {
		inst, rep, shared := strings.Cut(inst, "::")
		g, err1 := strconv.Atoi(idx)
		j, err2 := strconv.Atoi(inst)
		if err1 != nil || err2 != nil || g < 0 || j < 0 {
			return DeviceRef{}, fmt.Errorf("device %q: a MIG instance is \"<gpu>/<instance>\", such as \"2/0\", or a replica of one such as \"2/0::1\"", s)
		}
		r := -1
		if shared {
			if r, err1 = strconv.Atoi(rep); err1 != nil || r < 0 {
				return DeviceRef{}, fmt.Errorf("device %q: replica must be a non-negative number", s)
			}
		}
		return DeviceRef{GPU: g, Replica: r, MIG: j}, nil
	}
	idx, rep, shared := strings.Cut(s, "::")
	g, err := strconv.Atoi(idx)
	if err != nil || g < 0 {
		return DeviceRef{}, fmt.Errorf("device %q: want a GPU index such as \"3\", a replica such as \"3::1\" or a MIG instance such as \"3/0\"", s)
	}
	r := -1
	if shared {
		if r, err = strconv.Atoi(rep); err != nil || r < 0 {
			return DeviceRef{}, fmt.Errorf("device %q: replica must be a non-negative number", s)
		}
	}
	return DeviceRef{GPU: g, Replica: r, MIG: -1}, nil
}

func (s *Scenario) validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if _, ok := models[s.Model]; !ok {
		bad("model", "unknown model %q (known: %s)", s.Model, strings.Join(ModelNames(), ", "))
	}
	if s.GPUs < 0 || s.GPUs > 64 {
		bad("gpus", "%d is out of range 0-64", s.GPUs)
	}
	if _, ok := driverBranches[s.Driver]; s.Driver != "" && !ok {
		bad("driver", "unknown driver branch %q (known: R535, R550, R570, R580)", s.Driver)
	}
	m := resource.MustMatcher(resource.DefaultAll...)
	s.validateMIG(bad)
	s.validateGPUState(bad)
	checkDevs := func(path, res string, devs []string) {
		for k, d := range devs {
			at := fmt.Sprintf("%s[%d]", path, k)
			ref, err := ParseDevice(d)
			if err != nil {
				bad(at, "%v", err)
				continue
			}
			if ref.GPU >= s.GPUs {
				bad(at, "GPU %d does not exist (the node has %d)", ref.GPU, s.GPUs)
				continue
			}
			profiles, isMIG := s.MIG[ref.GPU]
			switch {
			case ref.MIG >= 0 && !isMIG:
				bad(at, "GPU %d has no MIG instances (see mig)", ref.GPU)
			case ref.MIG >= len(profiles):
				bad(at, "GPU %d has %d MIG instances", ref.GPU, len(profiles))
			case ref.MIG < 0 && isMIG:
				bad(at, "GPU %d is MIG-enabled: name one of its instances, such as \"%d/0\"", ref.GPU, ref.GPU)
			case ref.MIG >= 0 && strings.HasPrefix(res, "nvidia.com/mig-") && res != "nvidia.com/mig-"+profiles[ref.MIG]:
				bad(at, "instance %s is a %s, not a %s", d, profiles[ref.MIG], res)
			}
		}
	}
	seenPod := map[string]bool{}
	for i, p := range s.Pods {
		path := fmt.Sprintf("pods[%d]", i)
		if p.Namespace == "" || p.Name == "" {
			bad(path, "namespace and name are required")
		}
		if key := p.Namespace + "/" + p.Name; seenPod[key] {
			bad(path, "duplicate pod %s", key)
		} else {
			seenPod[key] = true
		}
		if c := p.Controller; c != nil && (c.APIVersion == "" || c.Kind == "" || c.Name == "") {
			bad(path+".controller", "apiVersion, kind and name are required")
		}
		// A pod's container names are unique in Kubernetes; two would
		// serve two series of one identity, an error on every scrape.
		seenCtr := map[string]bool{}
		for j, c := range p.Containers {
			cpath := fmt.Sprintf("%s.containers[%d]", path, j)
			if c.Name == "" {
				bad(cpath+".name", "required")
			} else if seenCtr[c.Name] {
				bad(cpath+".name", "duplicate container %s in pod %s/%s", c.Name, p.Namespace, p.Name)
			}
			seenCtr[c.Name] = true
			switch {
			case c.Claim != "":
				s.checkClaim(cpath, c, bad)
			case len(c.Devices) > 0:
				if _, ok := m.Vendor(c.Resource); !ok {
					bad(cpath+".resource", "%q is not a GPU resource", c.Resource)
				}
			}
			checkDevs(cpath+".devices", c.Resource, c.Devices)
			checkDevs(cpath+".unallocatedDevices", "", c.UnallocatedDevices)
			u := c.Utilization
			// Written so that NaN fails every comparison and is refused.
			if !(u.Mean >= 0 && u.Swing >= 0 && u.Mean-u.Swing >= 0 && u.Mean+u.Swing <= 100) {
				bad(cpath+".utilization", "mean±swing must stay within 0-100")
			}
			if u.Swing > 0 && u.Period <= 0 {
				bad(cpath+".utilization.period", "required when swing is set")
			}
			c.GPM.validate(cpath+".gpm", bad)
			if !(c.MemoryGiB >= 0 && c.MemoryGiB <= 1<<20) {
				bad(cpath+".memoryGiB", "must be a number between 0 and 1048576")
			}
		}
	}
	names := make([]string, 0, len(s.Allocatable))
	for res := range s.Allocatable {
		names = append(names, res)
	}
	sort.Strings(names)
	for _, res := range names {
		if _, ok := m.Vendor(res); !ok {
			bad("allocatable."+res, "not a GPU resource")
		}
		checkDevs("allocatable."+res, res, s.Allocatable[res])
	}
	if s.DRA != nil {
		checkDevs("dra.devices", "", s.DRA.Devices)
		seen := map[string]bool{}
		for k, d := range s.DRA.Devices {
			if ref, err := ParseDevice(d); err == nil && ref.Replica >= 0 {
				bad(fmt.Sprintf("dra.devices[%d]", k), "a DRA driver publishes whole GPUs or MIG instances, not replicas")
			}
			if seen[d] {
				bad(fmt.Sprintf("dra.devices[%d]", k), "%q listed twice", d)
			}
			seen[d] = true
		}
		if strings.ContainsAny(s.DRA.Driver, "/ ") {
			bad("dra.driver", "%q is not a driver name such as gpu.nvidia.com", s.DRA.Driver)
		}
	}
	return errors.Join(errs...)
}

// checkClaim checks a container that gets devices through a DRA claim:
// the scenario has a DRA driver, and it publishes the devices.
func (s *Scenario) checkClaim(path string, c Container, bad func(path, format string, args ...any)) {
	if s.DRA == nil {
		bad(path+".claim", "needs a dra section: the driver that publishes the devices")
		return
	}
	if c.Resource != "" {
		bad(path+".resource", "a container gets devices through a claim or a resource, not both")
	}
	if len(c.Devices) == 0 {
		bad(path+".devices", "a claim needs at least one device")
	}
	for k, d := range c.Devices {
		if !slices.Contains(s.DRA.Devices, d) {
			bad(fmt.Sprintf("%s.devices[%d]", path, k), "%q is not among dra.devices", d)
		}
	}
}

// migProfiles maps the profile names of a model ("1g.10gb") to their
// slice count and memory, from go-nvml's mock configuration of the model.
func migProfiles(model string) map[string]migProfile {
	out := map[string]migProfile{}
	for _, p := range models[model].MIGProfiles.GpuInstanceProfiles {
		gb := (p.MemorySizeMB + 1023) / 1024 // NVIDIA rounds a profile's memory up
		name := fmt.Sprintf("%dg.%dgb", p.SliceCount, gb)
		if _, dup := out[name]; !dup {
			out[name] = migProfile{Slices: int(p.SliceCount), MemoryMB: p.MemorySizeMB}
		}
	}
	return out
}

type migProfile struct {
	Slices   int
	MemoryMB uint64
}

// validateMIG checks that MIG GPUs exist, and that their profiles exist on
// the model and fit in its slices.
func (s *Scenario) validateMIG(bad func(path, format string, args ...any)) {
	profiles := migProfiles(s.Model)
	maxSlices := 0
	for _, p := range profiles {
		maxSlices = max(maxSlices, p.Slices)
	}
	for _, g := range slices.Sorted(maps.Keys(s.MIG)) {
		path := fmt.Sprintf("mig.%d", g)
		if g < 0 || g >= s.GPUs {
			bad(path, "GPU %d does not exist (the node has %d)", g, s.GPUs)
			continue
		}
		if len(s.MIG[g]) == 0 {
			bad(path, "a MIG-enabled GPU needs at least one instance")
		}
		slices := 0
		for j, name := range s.MIG[g] {
			p, ok := profiles[name]
			if !ok {
				known := make([]string, 0, len(profiles))
				for k := range profiles {
					known = append(known, k)
				}
				sort.Strings(known)
				bad(fmt.Sprintf("%s[%d]", path, j), "%s has no MIG profile %q (known: %s)", s.Model, name, strings.Join(known, ", "))
				continue
			}
			slices += p.Slices
		}
		if slices > maxSlices {
			bad(path, "instances take %d slices; a %s has %d", slices, s.Model, maxSlices)
		}
	}
}
