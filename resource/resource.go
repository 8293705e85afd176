// Package resource decides which Kubernetes extended resources are GPUs and
// which vendor they belong to. The kubelet, the API server and the collector
// all speak in resource names; keeping the one matcher here means the three
// sources can never disagree about what counts as a GPU.
package resource

import (
	"fmt"
	"sort"
	"strings"
)

// Rule names one resource, or a family of them when Name ends in "*"
// (nvidia.com/mig-* matches every MIG profile of the mixed strategy).
type Rule struct {
	Name   string
	Vendor string
}

// Matcher answers whether a resource name is a GPU resource. It is immutable
// after construction and safe for concurrent use.
type Matcher struct {
	exact    map[string]string
	prefixes []Rule
}

// DefaultNVIDIA is the set the kubelet path knows about by default: the
// device plugin's whole GPUs, its renamed time-slicing/MPS replicas and the
// MIG mixed-strategy profiles.
var DefaultNVIDIA = []string{"nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-*"}

// DefaultAll adds AMD, which Container Insights counted for requests,
// limits, capacity and allocatable.
var DefaultAll = append(append([]string(nil), DefaultNVIDIA...), "amd.com/gpu")

// DefaultDRADriver is NVIDIA's Dynamic Resource Allocation driver for GPUs
// and MIG instances: the one driver name the flags, the kubelet and API
// readers and the simulated node all default to.
const DefaultDRADriver = "gpu.nvidia.com"

// DefaultDRADrivers returns the DRA drivers read when none are configured,
// as a new slice each call so no caller can change another's default.
func DefaultDRADrivers() []string { return []string{DefaultDRADriver} }

// ParseRule turns a flag value such as "nvidia.com/mig-*" or
// "example.com/accel=acme" into a Rule. Without "=vendor" the vendor is the
// first label of the resource's domain ("nvidia" for nvidia.com/gpu).
func ParseRule(s string) (Rule, error) {
	name, vendor, hasVendor := strings.Cut(strings.TrimSpace(s), "=")
	if name == "" {
		return Rule{}, fmt.Errorf("empty resource name in %q", s)
	}
	domain, res, ok := strings.Cut(name, "/")
	if !ok || domain == "" || res == "" {
		return Rule{}, fmt.Errorf("resource %q is not of the form domain/name", name)
	}
	if i := strings.IndexByte(name, '*'); i >= 0 && i != len(name)-1 {
		return Rule{}, fmt.Errorf("resource %q: '*' is only allowed at the end", name)
	}
	if !hasVendor {
		vendor, _, _ = strings.Cut(domain, ".")
	}
	if vendor == "" {
		return Rule{}, fmt.Errorf("resource %q: empty vendor", s)
	}
	return Rule{Name: name, Vendor: vendor}, nil
}

// NewMatcher builds a Matcher from flag values (see ParseRule).
func NewMatcher(specs []string) (*Matcher, error) {
	m := &Matcher{exact: map[string]string{}}
	for _, s := range specs {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		if prefix, ok := strings.CutSuffix(r.Name, "*"); ok {
			m.prefixes = append(m.prefixes, Rule{Name: prefix, Vendor: r.Vendor})
			continue
		}
		m.exact[r.Name] = r.Vendor
	}
	// Longest prefix first, so a more specific rule wins.
	sort.SliceStable(m.prefixes, func(i, j int) bool { return len(m.prefixes[i].Name) > len(m.prefixes[j].Name) })
	return m, nil
}

// MustMatcher is NewMatcher for literal rule sets known to be valid.
func MustMatcher(specs ...string) *Matcher {
	m, err := NewMatcher(specs)
	if err != nil {
		panic(err)
	}
	return m
}

// Vendor returns the vendor of a GPU resource, and false for any other
// resource (cpu, memory, hugepages, NICs...).
func (m *Matcher) Vendor(name string) (string, bool) {
	if v, ok := m.exact[name]; ok {
		return v, true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(name, p.Name) && len(name) > len(p.Name) {
			return p.Vendor, true
		}
	}
	return "", false
}
