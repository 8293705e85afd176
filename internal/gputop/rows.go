package gputop

import (
	"cmp"
	"math"
	"slices"
)

// NodeRow is one node of `top nodes`. Pointers are nil where no exporter
// reported the reading (a GPU without power readings): unknown, not 0.
type NodeRow struct {
	Cluster string `json:"cluster,omitempty"`
	Node    string `json:"node"`
	// GPUs counts the node's physical GPUs.
	GPUs int `json:"gpus"`
	// Allocatable and Requested sum the GPU resources the node offers and
	// its pods request (whole GPUs, time-slicing replicas, MIG instances);
	// Free is what remains.
	Allocatable float64         `json:"allocatable"`
	Requested   float64         `json:"requested"`
	Free        float64         `json:"free"`
	Resources   []ResourceCount `json:"resources"`
	DutyCycle   *float64        `json:"duty_cycle_percent"`
	MemoryUsed  *float64        `json:"memory_used_bytes"`
	MemoryTotal *float64        `json:"memory_total_bytes"`
	Power       *float64        `json:"power_watts"`
	PowerLimit  *float64        `json:"power_limit_watts"`
	Health      map[string]int  `json:"health"`
	Reasons     map[string]int  `json:"health_reasons,omitempty"`
}

// ResourceCount is one GPU resource of a node.
type ResourceCount struct {
	Resource    string  `json:"resource"`
	Allocatable float64 `json:"allocatable"`
	Requested   float64 `json:"requested"`
}

// PodRow is one pod of `top pods`.
type PodRow struct {
	Cluster   string   `json:"cluster,omitempty"`
	Node      string   `json:"node"`
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	GPUs      []PodGPU `json:"gpus"`
	// Requested sums the pod's GPU requests over resources.
	Requested  float64  `json:"requested"`
	DutyCycle  *float64 `json:"duty_cycle_percent"`
	MemoryUsed *float64 `json:"memory_used_bytes"`
	// Power is the draw of the GPUs the pod holds alone. A GPU it shares
	// (time-slicing, MPS, another pod's MIG instance beside its own) has no
	// power of the pod's: a shared GPU's draw is never copied onto each
	// sharer. PowerPartial says some of its GPUs were left out.
	Power        *float64 `json:"power_watts"`
	PowerPartial bool     `json:"power_partial,omitempty"`
	Health       string   `json:"health"`
	Reason       string   `json:"health_reason,omitempty"`
}

// PodGPU is one device a pod holds, with its containers' readings.
type PodGPU struct {
	ID          string   `json:"gpu_id"`
	Containers  []string `json:"containers"`
	DutyCycle   *float64 `json:"duty_cycle_percent"`
	MemoryUsed  *float64 `json:"memory_used_bytes"`
	MemoryTotal *float64 `json:"memory_total_bytes"`
	Power       *float64 `json:"power_watts"`
	Health      string   `json:"health,omitempty"`
	Reason      string   `json:"health_reason,omitempty"`
}

type nodeKey struct{ cluster, node string }

type deviceKey struct{ cluster, node, gpu string }

func devKey(s Sample) deviceKey {
	return deviceKey{s.Labels["cluster_name"], s.Labels["node"], s.Labels["gpu_id"]}
}

func ptr(v float64) *float64 { return &v }

// percent rounds a duty cycle to a hundredth of a percent: the last bits
// of a mean depend on the order Prometheus added its series in.
func percent(v float64) *float64 { return ptr(math.Round(v*100) / 100) }

func add(p **float64, v float64) {
	if *p == nil {
		*p = ptr(0)
	}
	**p += v
}

// Nodes builds the rows of `top nodes` from the answers to NodeQueries. A
// node's duty cycle is the recording rule's where Prometheus has it, else
// the same mean computed here.
func Nodes(r Results) []NodeRow {
	rows := map[nodeKey]*NodeRow{}
	get := func(s Sample) *NodeRow {
		k := nodeKey{s.Labels["cluster_name"], s.Labels["node"]}
		n := rows[k]
		if n == nil {
			n = &NodeRow{Cluster: k.cluster, Node: k.node, Health: map[string]int{}}
			rows[k] = n
		}
		return n
	}
	// Memory, power and the GPU count are the physical GPUs': a MIG-enabled
	// GPU's memory is its instances' sum.
	physical := map[deviceKey]bool{}
	for _, s := range r.Vectors[qDevices] {
		n := get(s)
		if s.Labels["parent_gpu_id"] == "" {
			physical[devKey(s)] = true
			n.GPUs++
		}
	}
	for _, s := range r.Vectors[qMemTotal] {
		if physical[devKey(s)] {
			add(&get(s).MemoryTotal, s.Value)
		}
	}
	for _, s := range r.Vectors[qMemUsed] {
		if physical[devKey(s)] {
			add(&get(s).MemoryUsed, s.Value)
		}
	}
	for _, s := range r.Vectors[qPower] {
		add(&get(s).Power, s.Value)
	}
	for _, s := range r.Vectors[qPowerLimit] {
		add(&get(s).PowerLimit, s.Value)
	}
	for _, s := range r.Vectors[qHealth] {
		n := get(s)
		n.Health[s.Labels["status"]]++
		if reason := s.Labels["reason"]; reason != "none" && reason != "" {
			if n.Reasons == nil {
				n.Reasons = map[string]int{}
			}
			n.Reasons[reason]++
		}
	}
	// The recording rule's mean is over every device with a duty cycle,
	// MIG instances included; the fallback computes the same.
	sums, counts := map[nodeKey]float64{}, map[nodeKey]int{}
	for _, s := range r.Vectors[qDuty] {
		k := nodeKey{s.Labels["cluster_name"], s.Labels["node"]}
		get(s)
		sums[k] += s.Value
		counts[k]++
	}
	for k, c := range counts {
		rows[k].DutyCycle = percent(sums[k] / float64(c))
	}
	for _, s := range r.Recorded[qDuty] {
		get(s).DutyCycle = percent(s.Value)
	}
	res := map[nodeKey]map[string]*ResourceCount{}
	resOf := func(s Sample) *ResourceCount {
		k := nodeKey{s.Labels["cluster_name"], s.Labels["node"]}
		get(s)
		if res[k] == nil {
			res[k] = map[string]*ResourceCount{}
		}
		name := s.Labels["resource"]
		if res[k][name] == nil {
			res[k][name] = &ResourceCount{Resource: name}
		}
		return res[k][name]
	}
	for _, s := range r.Vectors[qAllocatable] {
		resOf(s).Allocatable += s.Value
	}
	for _, s := range r.Vectors[qRequests] {
		resOf(s).Requested += s.Value
	}
	out := make([]NodeRow, 0, len(rows))
	for k, n := range rows {
		for _, name := range sortedKeys(res[k]) {
			c := res[k][name]
			n.Resources = append(n.Resources, *c)
			n.Allocatable += c.Allocatable
			n.Requested += c.Requested
		}
		n.Free = max(n.Allocatable-n.Requested, 0)
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b NodeRow) int { return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Node, b.Node)) })
	return out
}

type podKey struct{ cluster, node, ns, pod string }

func podKeyOf(s Sample) podKey {
	return podKey{s.Labels["cluster_name"], s.Labels["node"], s.Labels["namespace"], s.Labels["pod"]}
}

// severity orders health statuses: a pod is as healthy as its worst GPU.
var severity = map[string]int{"healthy": 1, "degraded": 2, "failed": 3}

// Pods builds the rows of `top pods` from the answers to PodQueries.
func Pods(r Results) []PodRow {
	rows := map[podKey]*PodRow{}
	gpus := map[podKey]map[string]*PodGPU{}
	get := func(s Sample) *PodRow {
		k := podKeyOf(s)
		p := rows[k]
		if p == nil {
			p = &PodRow{Cluster: k.cluster, Node: k.node, Namespace: k.ns, Pod: k.pod}
			rows[k] = p
			gpus[k] = map[string]*PodGPU{}
		}
		return p
	}
	gpu := func(s Sample) *PodGPU {
		get(s)
		k, id := podKeyOf(s), s.Labels["gpu_id"]
		g := gpus[k][id]
		if g == nil {
			g = &PodGPU{ID: id}
			gpus[k][id] = g
		}
		if c := s.Labels["container"]; c != "" && !slices.Contains(g.Containers, c) {
			g.Containers = append(g.Containers, c)
			slices.Sort(g.Containers)
		}
		return g
	}
	// Two containers of a pod on one device each see the device's numbers
	// (or their own share of them): the pod's are the largest, never a sum
	// that could exceed the device.
	maxInto := func(p **float64, v float64) {
		if *p == nil || **p < v {
			*p = ptr(v)
		}
	}
	for _, s := range r.Vectors[qCtrMemTotal] {
		maxInto(&gpu(s).MemoryTotal, s.Value)
	}
	for _, s := range r.Vectors[qCtrMemUsed] {
		maxInto(&gpu(s).MemoryUsed, s.Value)
	}
	for _, s := range r.Vectors[qCtrDuty] {
		maxInto(&gpu(s).DutyCycle, s.Value)
	}
	for _, s := range r.Vectors[qCtrHealth] {
		g := gpu(s)
		if severity[s.Labels["status"]] > severity[g.Health] {
			g.Health, g.Reason = s.Labels["status"], s.Labels["reason"]
			if g.Reason == "none" {
				g.Reason = ""
			}
		}
	}
	for _, s := range r.Vectors[qRequests] {
		get(s).Requested += s.Value
	}
	power := map[deviceKey]float64{}
	for _, s := range r.Vectors[qPower] {
		power[devKey(s)] = s.Value
	}
	// How many pods hold each device: power is a whole GPU's, so only a
	// GPU one pod holds alone gives that pod its power.
	holders := map[deviceKey]int{}
	for k, devs := range gpus {
		for id := range devs {
			holders[deviceKey{k.cluster, k.node, id}]++
		}
	}
	out := make([]PodRow, 0, len(rows))
	for k, p := range rows {
		var duty float64
		n := 0
		for _, id := range sortedKeys(gpus[k]) {
			g := gpus[k][id]
			dk := deviceKey{k.cluster, k.node, id}
			if w, ok := power[dk]; ok && holders[dk] == 1 {
				g.Power = ptr(w)
				add(&p.Power, w)
			} else {
				p.PowerPartial = true
			}
			if g.DutyCycle != nil {
				duty += *g.DutyCycle
				n++
			}
			if g.MemoryUsed != nil {
				add(&p.MemoryUsed, *g.MemoryUsed)
			}
			if severity[g.Health] > severity[p.Health] {
				p.Health, p.Reason = g.Health, g.Reason
			}
			p.GPUs = append(p.GPUs, *g)
		}
		if n > 0 {
			p.DutyCycle = percent(duty / float64(n))
		}
		if p.GPUs == nil {
			p.GPUs = []PodGPU{}
		}
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b PodRow) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.Node, b.Node))
	})
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
