// Package gputop is `kubectl gpu top`: the cluster's GPUs per node and per
// pod, in the shape of `kubectl top`. The numbers come from the user's
// Prometheus, or, where none answers, from the exporters themselves scraped
// through the API server's pod proxy; both answer the same queries, so both
// print the same table.
package gputop

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Sample is one series of an instant vector: its labels and value.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query is one instant vector: the series of Metric that carry Match,
// reduced to the labels By with max, as the recording rules do (two
// exporters on one node during a rolling update must not count twice).
// Recorded, where set, names a recording rule's series
// (deploy/prometheus/recording.rules.yaml) that holds Recorded.Op by
// Recorded.By of this query: a Prometheus that has it answers from it.
type Query struct {
	Name, Metric string
	By           []string
	Match        map[string]string
	Recorded     *Recording
}

// Recording is a recording rule's series and what it holds.
type Recording struct {
	Series string
	Op     string // avg or sum
	By     []string
}

// PromQL is the query as Prometheus runs it.
func (q Query) PromQL() string {
	return fmt.Sprintf("max by (%s) (%s%s)", strings.Join(q.By, ", "), q.Metric, matchers(q.Match))
}

func matchers(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Eval answers q from scraped series, as Prometheus would from the same
// scrapes: series of Metric carrying Match, max by By.
func (q Query) Eval(series map[string][]Sample) []Sample {
	type group struct {
		labels map[string]string
		value  float64
	}
	groups := map[string]*group{}
	var order []string
	for _, s := range series[q.Metric] {
		if !matches(s.Labels, q.Match) {
			continue
		}
		key, labels := project(s.Labels, q.By)
		g, ok := groups[key]
		if !ok {
			groups[key] = &group{labels, s.Value}
			order = append(order, key)
			continue
		}
		g.value = max(g.value, s.Value)
	}
	slices.Sort(order)
	out := make([]Sample, len(order))
	for i, k := range order {
		out[i] = Sample{Labels: groups[k].labels, Value: groups[k].value}
	}
	return out
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// project keeps the labels by, dropping empty ones as Prometheus does, and
// returns them with a key that identifies the group.
func project(labels map[string]string, by []string) (string, map[string]string) {
	out := make(map[string]string, len(by))
	var key strings.Builder
	for _, l := range by {
		v := labels[l]
		if v != "" {
			out[l] = v
		}
		key.WriteString(v)
		key.WriteByte(0)
	}
	return key.String(), out
}

// The label sets of the queries: every one keeps cluster_name, as the
// recording rules do, so one Prometheus may hold several clusters.
var (
	byNode      = []string{"cluster_name", "node"}
	byNodeRes   = []string{"cluster_name", "node", "resource"}
	byDevice    = []string{"cluster_name", "node", "gpu_id"}
	byPodRes    = []string{"cluster_name", "node", "namespace", "pod", "resource"}
	byContainer = []string{"cluster_name", "node", "namespace", "pod", "container", "gpu_id"}
)

func with(by []string, more ...string) []string { return append(slices.Clone(by), more...) }

// Names of the queries a view asks.
const (
	qAllocatable = "allocatable"
	qRequests    = "requests"
	qDevices     = "devices"
	qMemTotal    = "memory_total"
	qMemUsed     = "memory_used"
	qDuty        = "duty_cycle"
	qPower       = "power"
	qPowerLimit  = "power_limit"
	qHealth      = "health"
	qCtrDuty     = "container_duty_cycle"
	qCtrMemUsed  = "container_memory_used"
	qCtrMemTotal = "container_memory_total"
	qCtrHealth   = "container_health"
)

// deviceQueries are the per-device readings both views use.
func deviceQueries() []Query {
	return []Query{
		{Name: qDevices, Metric: "kube_gpu_device_info", By: with(byDevice, "parent_gpu_id")},
		{Name: qMemTotal, Metric: "nodeGpumemoryTotalBytes", By: byDevice},
		{Name: qMemUsed, Metric: "nodeGpumemoryUsedBytes", By: byDevice},
		{Name: qDuty, Metric: "nodeGpuDutyCycle", By: byDevice,
			Recorded: &Recording{Series: "node:nodeGpuDutyCycle:avg", Op: "avg", By: byNode}},
		{Name: qPower, Metric: "kube_gpu_power_usage_watts", By: byDevice},
		{Name: qPowerLimit, Metric: "kube_gpu_power_limit_watts", By: byDevice},
		{Name: qHealth, Metric: "kube_gpu_health_status", By: with(byDevice, "status", "reason")},
	}
}

// NodeQueries are what `top nodes` asks.
func NodeQueries() []Query {
	return append([]Query{
		{Name: qAllocatable, Metric: "nodeGpuAllocatable", By: byNodeRes},
		{Name: qRequests, Metric: "kube_gpu_pod_requests", By: byPodRes},
	}, deviceQueries()...)
}

// PodQueries are what `top pods` asks; namespace "" means every namespace.
func PodQueries(namespace string) []Query {
	var m map[string]string
	if namespace != "" {
		m = map[string]string{"namespace": namespace}
	}
	return append([]Query{
		{Name: qRequests, Metric: "kube_gpu_pod_requests", By: byPodRes, Match: m},
		{Name: qCtrMemTotal, Metric: "containerGpumemoryTotalBytes", By: byContainer, Match: m},
		{Name: qCtrMemUsed, Metric: "containerGpumemoryUsedBytes", By: byContainer, Match: m},
		{Name: qCtrDuty, Metric: "containerGpuDutyCycle", By: byContainer, Match: m},
		{Name: qCtrHealth, Metric: "kube_gpu_container_health_status", By: with(byContainer, "status", "reason"), Match: m},
	}, deviceQueries()...)
}

// Results are the answers to a view's queries by query name, and, by
// query name, the recorded series answers where Prometheus had them.
type Results struct {
	Vectors  map[string][]Sample
	Recorded map[string][]Sample
	// Missed lists what the source could not read while answering (an
	// exporter pod that did not answer): the numbers lack its node.
	Missed []string
}
