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
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

//go:embed builtin.yaml
var builtin []byte

// Builtin returns the built-in scenario: 8 GPUs with a training pod, an
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
	Node        string              `yaml:"node"`
	Model       string              `yaml:"model"`
	GPUs        int                 `yaml:"gpus"`
	Pods        []Pod               `yaml:"pods"`
	Allocatable map[string][]string `yaml:"allocatable"`
}

// Pod is one pod of the scenario.
type Pod struct {
	Namespace  string      `yaml:"namespace"`
	Name       string      `yaml:"name"`
	Containers []Container `yaml:"containers"`
}

// Container is one container and the devices it holds.
type Container struct {
	Name     string `yaml:"name"`
	Resource string `yaml:"resource"`
	// Devices are GPU indexes ("3") or replicas of a shared GPU ("6::1").
	Devices []string `yaml:"devices"`
	// UnallocatedDevices are GPUs the container uses without having been
	// allocated them (NVIDIA_VISIBLE_DEVICES=all in its image, say): real
	// use that no holder accounts for.
	UnallocatedDevices []string `yaml:"unallocatedDevices"`
	Utilization        Wave     `yaml:"utilization"`
	MemoryGiB          float64  `yaml:"memoryGiB"`
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
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeviceRef is a parsed "3" or "6::1" device entry.
type DeviceRef struct {
	GPU, Replica int // Replica is -1 for a whole GPU
}

// ParseDevice parses a scenario device entry.
func ParseDevice(s string) (DeviceRef, error) {
	idx, rep, shared := strings.Cut(s, "::")
	g, err := strconv.Atoi(idx)
	if err != nil || g < 0 {
		return DeviceRef{}, fmt.Errorf("device %q: want a GPU index such as \"3\" or a replica such as \"3::1\"", s)
	}
	r := -1
	if shared {
		if r, err = strconv.Atoi(rep); err != nil || r < 0 {
			return DeviceRef{}, fmt.Errorf("device %q: replica must be a non-negative number", s)
		}
	}
	return DeviceRef{GPU: g, Replica: r}, nil
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
	m := resource.MustMatcher(resource.DefaultAll...)
	checkDevs := func(path string, devs []string) {
		for k, d := range devs {
			ref, err := ParseDevice(d)
			if err != nil {
				bad(fmt.Sprintf("%s[%d]", path, k), "%v", err)
				continue
			}
			if ref.GPU >= s.GPUs {
				bad(fmt.Sprintf("%s[%d]", path, k), "GPU %d does not exist (the node has %d)", ref.GPU, s.GPUs)
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
		for j, c := range p.Containers {
			cpath := fmt.Sprintf("%s.containers[%d]", path, j)
			if c.Name == "" {
				bad(cpath+".name", "required")
			}
			if len(c.Devices) > 0 {
				if _, ok := m.Vendor(c.Resource); !ok {
					bad(cpath+".resource", "%q is not a GPU resource", c.Resource)
				}
			}
			checkDevs(cpath+".devices", c.Devices)
			checkDevs(cpath+".unallocatedDevices", c.UnallocatedDevices)
			u := c.Utilization
			// Written so that NaN fails every comparison and is refused.
			if !(u.Mean >= 0 && u.Swing >= 0 && u.Mean-u.Swing >= 0 && u.Mean+u.Swing <= 100) {
				bad(cpath+".utilization", "mean±swing must stay within 0-100")
			}
			if u.Swing > 0 && u.Period <= 0 {
				bad(cpath+".utilization.period", "required when swing is set")
			}
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
		checkDevs("allocatable."+res, s.Allocatable[res])
	}
	return errors.Join(errs...)
}
