package kube

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func rule(name string, driver, pool, device *string, key, value string, effect resourcev1.DeviceTaintEffect) *resourcev1.DeviceTaintRule {
	r := &resourcev1.DeviceTaintRule{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       resourcev1.DeviceTaintRuleSpec{Taint: resourcev1.DeviceTaint{Key: key, Value: value, Effect: effect}},
	}
	if driver != nil || pool != nil || device != nil {
		r.Spec.DeviceSelector = &resourcev1.DeviceTaintSelector{Driver: driver, Pool: pool, Device: device}
	}
	return r
}

func TestDeviceTaints(t *testing.T) {
	const drv = "gpu.nvidia.com"
	old := slice("old", drv, "node-a", testNode, 1, "gpu-0", "gpu-1")
	old.Spec.Devices[0].Taints = []resourcev1.DeviceTaint{{Key: "stale", Effect: resourcev1.DeviceTaintEffectNoSchedule}}
	cur := slice("cur", drv, "node-a", testNode, 2, "gpu-0", "gpu-1", "nic")
	cur.Spec.Devices[1].Taints = []resourcev1.DeviceTaint{
		{Key: "gpu.nvidia.com/xid", Value: "79", Effect: resourcev1.DeviceTaintEffectNoExecute},
		{Key: "maintenance", Effect: resourcev1.DeviceTaintEffectNoSchedule},
	}
	other := slice("other", "net.example.com", "node-a", testNode, 1, "gpu-5")
	other.Spec.Devices[0].Taints = []resourcev1.DeviceTaint{{Key: "not-a-gpu", Effect: resourcev1.DeviceTaintEffectNoSchedule}}
	rules := []*resourcev1.DeviceTaintRule{
		rule("drain-gpu-0", ptr(drv), ptr("node-a"), ptr("gpu-0"), "drain", "true", resourcev1.DeviceTaintEffectNoExecute),
		rule("pool", ptr(drv), ptr("node-a"), nil, "firmware", "old", resourcev1.DeviceTaintEffectNone),
		rule("elsewhere", ptr(drv), ptr("node-b"), nil, "x", "", resourcev1.DeviceTaintEffectNoSchedule),
		rule("other-driver", ptr("net.example.com"), nil, nil, "y", "", resourcev1.DeviceTaintEffectNoSchedule),
		rule("everything", nil, nil, nil, "audit", "", resourcev1.DeviceTaintEffectNone),
	}
	uuid := func(n string) string { return "GPU-00000000-0000-4000-8000-00000000000" + n }
	dt := func(dev, u, key, value, effect, rule string) DRADeviceTaint {
		return DRADeviceTaint{DRADevice: DRADevice{drv, "node-a", dev}, UUID: u, Key: key, Value: value, Effect: effect, Rule: rule}
	}
	want := []DRADeviceTaint{
		dt("gpu-0", uuid("0"), "drain", "true", "NoExecute", "drain-gpu-0"),
		dt("gpu-0", uuid("0"), "audit", "", "None", "everything"),
		dt("gpu-0", uuid("0"), "firmware", "old", "None", "pool"),
		dt("gpu-1", uuid("1"), "gpu.nvidia.com/xid", "79", "NoExecute", ""),
		dt("gpu-1", uuid("1"), "maintenance", "", "NoSchedule", ""),
		dt("gpu-1", uuid("1"), "audit", "", "None", "everything"),
		dt("gpu-1", uuid("1"), "firmware", "old", "None", "pool"),
		dt("nic", "", "audit", "", "None", "everything"),
		dt("nic", "", "firmware", "old", "None", "pool"),
	}
	got := DeviceTaints([]*resourcev1.ResourceSlice{old, cur, other}, rules, resource.DefaultDRADrivers())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DeviceTaints =\n%+v\nwant\n%+v", got, want)
	}

	// The caches keep what DeviceTaints reads.
	slim := func(s *resourcev1.ResourceSlice) *resourcev1.ResourceSlice {
		o, _ := sliceTransform()(s)
		return o.(*resourcev1.ResourceSlice)
	}
	var slimRules []*resourcev1.DeviceTaintRule
	for _, r := range rules {
		o, _ := ruleTransform()(r)
		slimRules = append(slimRules, o.(*resourcev1.DeviceTaintRule))
	}
	if got := DeviceTaints([]*resourcev1.ResourceSlice{slim(old), slim(cur), slim(other)}, slimRules, resource.DefaultDRADrivers()); !reflect.DeepEqual(got, want) {
		t.Errorf("after the transforms =\n%+v\nwant\n%+v", got, want)
	}
}

func TestWatcherDeviceTaintRules(t *testing.T) {
	s := slice("a-gpus", "gpu.nvidia.com", "node-a", testNode, 1, "gpu-0", "gpu-1")
	api := newFakeAPI(gpuNode(testNode), s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode, DRA: true}, slog.New(slog.DiscardHandler))
	w.Start(ctx)
	testkit.Eventually(t, 10*time.Second, "watches open", func() bool {
		return api.openedWatches("devicetaintrules") > 0 && api.openedWatches("resourceslices") > 0 && w.Snapshot().Healthy
	})
	if got := w.Snapshot().DRATaints; got != nil {
		t.Errorf("taints before any: %+v", got)
	}
	r := rule("drain", ptr("gpu.nvidia.com"), nil, ptr("gpu-1"), "drain", "", resourcev1.DeviceTaintEffectNoExecute)
	if _, err := api.client.ResourceV1().DeviceTaintRules().Create(ctx, r, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []DRADeviceTaint{{DRADevice: DRADevice{"gpu.nvidia.com", "node-a", "gpu-1"}, UUID: "GPU-00000000-0000-4000-8000-000000000001",
		Key: "drain", Effect: "NoExecute", Rule: "drain"}}
	testkit.Eventually(t, 10*time.Second, "rule's taint seen", func() bool {
		return reflect.DeepEqual(w.Snapshot().DRATaints, want)
	})
	if err := api.client.ResourceV1().DeviceTaintRules().Delete(ctx, "drain", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "rule's taint gone", func() bool { return w.Snapshot().DRATaints == nil })
	// Rules have no node: they are listed without a selector.
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, req := range api.requests {
		if req.resource == "devicetaintrules" && req.fieldSelector != "" {
			t.Errorf("%s devicetaintrules with field selector %q", req.verb, req.fieldSelector)
		}
	}
}
