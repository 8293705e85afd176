package gputop

import (
	"bytes"
	"reflect"
	"testing"
)

func s(v float64, kv ...string) Sample {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return Sample{Labels: l, Value: v}
}

func TestPromQL(t *testing.T) {
	for _, tt := range []struct {
		q    Query
		want string
	}{
		{Query{Metric: "nodeGpuAllocatable", By: byNodeRes}, "max by (cluster_name, node, resource) (nodeGpuAllocatable)"},
		{Query{Metric: "containerGpuDutyCycle", By: []string{"pod"}, Match: map[string]string{"namespace": `team "a"`, "cluster_name": "eu"}},
			`max by (pod) (containerGpuDutyCycle{cluster_name="eu", namespace="team \"a\""})`},
	} {
		if got := tt.q.PromQL(); got != tt.want {
			t.Errorf("PromQL = %s, want %s", got, tt.want)
		}
	}
}

// Eval answers as Prometheus answers max by: two exporters of one node (a
// rolling update) count once, labels not kept are dropped, matchers filter.
func TestEval(t *testing.T) {
	series := map[string][]Sample{
		"kube_gpu_pod_requests": {
			s(1, "node", "n1", "namespace", "a", "pod", "p", "resource", "nvidia.com/gpu", "instance", "old"),
			s(1, "node", "n1", "namespace", "a", "pod", "p", "resource", "nvidia.com/gpu", "instance", "new"),
			s(2, "node", "n2", "namespace", "b", "pod", "q", "resource", "nvidia.com/gpu", "instance", "x"),
		},
	}
	q := Query{Metric: "kube_gpu_pod_requests", By: byPodRes}
	want := []Sample{
		s(1, "node", "n1", "namespace", "a", "pod", "p", "resource", "nvidia.com/gpu"),
		s(2, "node", "n2", "namespace", "b", "pod", "q", "resource", "nvidia.com/gpu"),
	}
	if got := q.Eval(series); !reflect.DeepEqual(got, want) {
		t.Errorf("Eval = %v, want %v", got, want)
	}
	q.Match = map[string]string{"namespace": "b"}
	if got := q.Eval(series); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("Eval with namespace b = %v, want %v", got, want[1:])
	}
	if got := (Query{Metric: "absent", By: byNode}).Eval(series); len(got) != 0 {
		t.Errorf("Eval of an absent metric = %v", got)
	}
}

func TestNodes(t *testing.T) {
	dev := func(v float64, gpu, parent string) Sample {
		return s(v, "node", "n1", "gpu_id", gpu, "parent_gpu_id", parent)
	}
	res := Results{Vectors: map[string][]Sample{
		// GPU-0 whole; GPU-1 split into two MIG instances.
		qDevices:     {dev(1, "GPU-0", ""), dev(1, "GPU-1", ""), dev(1, "MIG-a", "GPU-1"), dev(1, "MIG-b", "GPU-1"), s(1, "node", "n2", "gpu_id", "GPU-9")},
		qMemTotal:    {dev(80<<30, "GPU-0", ""), dev(80<<30, "GPU-1", ""), dev(40<<30, "MIG-a", ""), dev(40<<30, "MIG-b", "")},
		qMemUsed:     {dev(10<<30, "GPU-0", ""), dev(6<<30, "GPU-1", ""), dev(2<<30, "MIG-a", ""), dev(4<<30, "MIG-b", "")},
		qDuty:        {dev(90, "GPU-0", ""), dev(10, "MIG-a", ""), dev(20, "MIG-b", "")},
		qPower:       {dev(500, "GPU-0", ""), dev(200, "GPU-1", "")},
		qPowerLimit:  {dev(700, "GPU-0", ""), dev(700, "GPU-1", "")},
		qHealth:      {s(1, "node", "n1", "gpu_id", "GPU-0", "status", "healthy", "reason", "none"), s(1, "node", "n1", "gpu_id", "GPU-1", "status", "failed", "reason", "xid")},
		qAllocatable: {s(1, "node", "n1", "resource", "nvidia.com/gpu"), s(2, "node", "n1", "resource", "nvidia.com/mig-3g.40gb")},
		qRequests:    {s(1, "node", "n1", "namespace", "a", "pod", "p", "resource", "nvidia.com/gpu"), s(1, "node", "n1", "namespace", "a", "pod", "q", "resource", "nvidia.com/mig-3g.40gb")},
	}}
	got := Nodes(res)
	if len(got) != 2 {
		t.Fatalf("%d rows, want 2: %+v", len(got), got)
	}
	n1, n2 := got[0], got[1]
	want := NodeRow{Node: "n1", GPUs: 2, Allocatable: 3, Requested: 2, Free: 1,
		Resources:   []ResourceCount{{"nvidia.com/gpu", 1, 1}, {"nvidia.com/mig-3g.40gb", 2, 1}},
		DutyCycle:   ptr(40), // the mean over every device with a duty cycle, as the recording rule's
		MemoryUsed:  ptr(16 << 30),
		MemoryTotal: ptr(160 << 30), // physical GPUs only: the instances' memory is their GPU's
		Power:       ptr(700), PowerLimit: ptr(1400),
		Health: map[string]int{"healthy": 1, "failed": 1}, Reasons: map[string]int{"xid": 1}}
	if !reflect.DeepEqual(n1, want) {
		t.Errorf("n1:\n got %+v\nwant %+v", n1, want)
	}
	// Nothing but the device: unknown readings stay unknown, not zero.
	if n2.Node != "n2" || n2.GPUs != 1 || n2.DutyCycle != nil || n2.MemoryUsed != nil || n2.Power != nil || len(n2.Health) != 0 {
		t.Errorf("n2: %+v", n2)
	}

	// Prometheus' recorded series wins where it has the node.
	res.Recorded = map[string][]Sample{qDuty: {s(41.004, "node", "n1")}}
	if d := Nodes(res)[0].DutyCycle; d == nil || *d != 41 {
		t.Errorf("recorded duty cycle not used: %v", d)
	}

	var out bytes.Buffer
	if err := WriteNodes(&out, got); err != nil {
		t.Fatal(err)
	}
	wantTable := `NAME   GPUS   REQUESTED   ALLOCATABLE   FREE   DUTY%   MEMORY(GiB)   MEMORY%   POWER(W)   POWER%   HEALTH
n1     2      2           3             1      40%     16.0          10%       700        50%      1 healthy, 1 failed
n2     1      0           0             0      -       -             -         -          -        -
`
	if out.String() != wantTable {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), wantTable)
	}
}

func TestPods(t *testing.T) {
	ctr := func(v float64, pod, c, gpu string) Sample {
		return s(v, "cluster_name", "eu", "node", "n1", "namespace", "a", "pod", pod, "container", c, "gpu_id", gpu)
	}
	res := Results{Vectors: map[string][]Sample{
		qCtrMemTotal: {ctr(80, "p", "main", "GPU-0"), ctr(80, "p", "side", "GPU-0"), ctr(80, "p", "main", "GPU-1"), ctr(80, "q", "main", "GPU-1")},
		qCtrMemUsed:  {ctr(10, "p", "main", "GPU-0"), ctr(10, "p", "side", "GPU-0"), ctr(5, "p", "main", "GPU-1"), ctr(3, "q", "main", "GPU-1")},
		qCtrDuty:     {ctr(90, "p", "main", "GPU-0"), ctr(90, "p", "side", "GPU-0"), ctr(30, "p", "main", "GPU-1")},
		qCtrHealth: {
			s(1, "cluster_name", "eu", "node", "n1", "namespace", "a", "pod", "p", "container", "main", "gpu_id", "GPU-0", "status", "healthy", "reason", "none"),
			s(1, "cluster_name", "eu", "node", "n1", "namespace", "a", "pod", "p", "container", "main", "gpu_id", "GPU-1", "status", "degraded", "reason", "thermal_slowdown"),
		},
		qRequests: {s(2, "cluster_name", "eu", "node", "n1", "namespace", "a", "pod", "p", "resource", "nvidia.com/gpu")},
		qPower:    {s(300, "cluster_name", "eu", "node", "n1", "gpu_id", "GPU-0"), s(100, "cluster_name", "eu", "node", "n1", "gpu_id", "GPU-1")},
	}}
	got := Pods(res)
	if len(got) != 2 {
		t.Fatalf("%d rows: %+v", len(got), got)
	}
	p := got[0]
	// Two containers on GPU-0 are one GPU of the pod, its numbers not
	// doubled. GPU-1, which p shares with q, gives neither its power: a
	// shared GPU's draw is never copied onto each sharer.
	if p.Pod != "p" || len(p.GPUs) != 2 || !reflect.DeepEqual(p.GPUs[0].Containers, []string{"main", "side"}) ||
		*p.MemoryUsed != 15 || *p.DutyCycle != 60 || *p.Power != 300 || !p.PowerPartial || p.GPUs[1].Power != nil ||
		p.Health != "degraded" || p.Reason != "thermal_slowdown" || p.Requested != 2 {
		t.Errorf("pod p: %+v", p)
	}
	if q := got[1]; q.Pod != "q" || q.DutyCycle != nil || *q.MemoryUsed != 3 || q.Health != "" || q.Power != nil || !q.PowerPartial {
		t.Errorf("pod q (no duty cycle, no health, only a shared GPU): %+v", q)
	}
	var out bytes.Buffer
	if err := WritePods(&out, got, true); err != nil {
		t.Fatal(err)
	}
	wantTable := `CLUSTER   NAMESPACE   NAME   NODE   GPUS   DUTY%   MEMORY(GiB)   POWER(W)   HEALTH
eu        a           p      n1     2      60%     0.0           300*       degraded (thermal_slowdown)
eu        a           q      n1     1      -       0.0           shared     -
`
	if out.String() != wantTable {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), wantTable)
	}
}
