package kube

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// slice is a ResourceSlice of node publishing the given devices; a device
// named "gpu-N" carries the uuid attribute, others do not.
func slice(name, driver, pool, node string, gen int64, devices ...string) *resourcev1.ResourceSlice {
	s := &resourcev1.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"x": "y"}},
		Spec: resourcev1.ResourceSliceSpec{
			Driver:   driver,
			Pool:     resourcev1.ResourcePool{Name: pool, Generation: gen, ResourceSliceCount: 1},
			NodeName: &node,
		},
	}
	for _, d := range devices {
		dev := resourcev1.Device{Name: d, Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
			"productName": {StringValue: ptr("NVIDIA H100 80GB HBM3")},
		}}
		var n int
		if _, err := fmt.Sscanf(d, "gpu-%d", &n); err == nil {
			dev.Attributes["uuid"] = resourcev1.DeviceAttribute{StringValue: ptr(fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", n))}
		}
		s.Spec.Devices = append(s.Spec.Devices, dev)
	}
	return s
}

func ptr(s string) *string { return &s }

func TestResourceSliceDevices(t *testing.T) {
	qualified := slice("q", "gpu.nvidia.com", "node-a", testNode, 3, "mig-0")
	qualified.Spec.Devices[0].Attributes["gpu.nvidia.com/uuid"] = resourcev1.DeviceAttribute{StringValue: ptr("MIG-00000000-0000-4000-9000-000000000000")}
	uuids, drivers := ResourceSliceDevices([]*resourcev1.ResourceSlice{
		slice("old", "gpu.nvidia.com", "node-a", testNode, 2, "gpu-0", "gpu-1", "gpu-9"),
		slice("new-1", "gpu.nvidia.com", "node-a", testNode, 3, "gpu-0", "gpu-1"),
		slice("new-2", "gpu.nvidia.com", "node-a", testNode, 3, "gpu-2", "no-uuid"),
		qualified,
		slice("nic", "nic.example.com", "node-a", testNode, 1, "gpu-7"),
	}, resource.DefaultDRADrivers())
	if want := []DRADriver{{Driver: "gpu.nvidia.com", Devices: 5}}; !reflect.DeepEqual(drivers, want) {
		t.Errorf("drivers = %+v, want %+v (the newest generation only, other drivers ignored)", drivers, want)
	}
	want := map[DRADevice]string{
		{"gpu.nvidia.com", "node-a", "gpu-0"}: "GPU-00000000-0000-4000-8000-000000000000",
		{"gpu.nvidia.com", "node-a", "gpu-1"}: "GPU-00000000-0000-4000-8000-000000000001",
		{"gpu.nvidia.com", "node-a", "gpu-2"}: "GPU-00000000-0000-4000-8000-000000000002",
		{"gpu.nvidia.com", "node-a", "mig-0"}: "MIG-00000000-0000-4000-9000-000000000000",
	}
	if !reflect.DeepEqual(uuids, want) {
		t.Errorf("uuids = %v\nwant %v", uuids, want)
	}
}

func TestWatcherResourceSlices(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), slice("a-gpus", "gpu.nvidia.com", "node-a", testNode, 1, "gpu-0", "gpu-1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode, DRA: true}, slog.New(slog.DiscardHandler))
	w.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 10*time.Second)
	defer syncCancel()
	if !w.WaitForSync(syncCtx) {
		t.Fatal("informers did not sync")
	}
	eventually(t, 10*time.Second, "watches open", func() bool {
		return api.openedWatches("resourceslices") > 0 && w.Snapshot().Healthy
	})
	s := w.Snapshot()
	if !s.DRAEnabled || !reflect.DeepEqual(s.DRA, []DRADriver{{"gpu.nvidia.com", 2}}) {
		t.Fatalf("DRA = %+v (enabled %v)", s.DRA, s.DRAEnabled)
	}
	if u, ok := s.DRADeviceUUID("gpu.nvidia.com", "node-a", "gpu-1"); !ok || u != "GPU-00000000-0000-4000-8000-000000000001" {
		t.Errorf("gpu-1 = %q, %v", u, ok)
	}
	// The driver publishes a third GPU: the informer follows.
	if _, err := api.client.ResourceV1().ResourceSlices().Create(ctx, slice("a-more", "gpu.nvidia.com", "node-a", testNode, 1, "gpu-2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "new slice seen", func() bool {
		_, ok := w.Snapshot().DRADeviceUUID("gpu.nvidia.com", "node-a", "gpu-2")
		return ok
	})
	if got := w.Snapshot().DRA; !reflect.DeepEqual(got, []DRADriver{{"gpu.nvidia.com", 3}}) {
		t.Errorf("DRA after the new slice = %+v", got)
	}
	// Slices were only ever asked for with this node's field selector.
	api.mu.Lock()
	defer api.mu.Unlock()
	verbs := map[string]bool{}
	for _, r := range api.requests {
		if r.resource != "resourceslices" {
			continue
		}
		verbs[r.verb] = true
		if r.fieldSelector != "spec.nodeName="+testNode {
			t.Errorf("%s resourceslices with field selector %q", r.verb, r.fieldSelector)
		}
	}
	if !verbs["list"] || !verbs["watch"] {
		t.Errorf("resourceslices verbs seen: %v, want list and watch", verbs)
	}
}

func TestWatcherWithoutDRAReadsNoSlices(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), slice("a-gpus", "gpu.nvidia.com", "node-a", testNode, 1, "gpu-0"))
	w := startWatcher(t, api)
	if s := w.Snapshot(); s.DRAEnabled || s.DRA != nil {
		t.Errorf("DRA data without DRA: %+v", s.DRA)
	}
	api.checkSelectors(t) // fails on any request for resourceslices
}

func TestSliceTransform(t *testing.T) {
	in := slice("s", "gpu.nvidia.com", "node-a", testNode, 4, "gpu-0", "other")
	out, err := sliceTransform()(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*resourcev1.ResourceSlice)
	if got.Labels != nil || got.Spec.Pool.Generation != 4 || *got.Spec.NodeName != testNode || len(got.Spec.Devices) != 2 {
		t.Fatalf("transformed = %+v", got)
	}
	if len(got.Spec.Devices[0].Attributes) != 1 || got.Spec.Devices[1].Attributes != nil {
		t.Errorf("attributes kept: %+v", got.Spec.Devices)
	}
	again, _ := sliceTransform()(got)
	if !reflect.DeepEqual(again, got) {
		t.Error("transform is not idempotent")
	}
}
