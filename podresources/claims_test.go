package podresources

import (
	"context"
	"reflect"
	"testing"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
)

// draPod is a pod whose container got devices through one ResourceClaim.
func draPod(ns, name, ctr, claim string, devs ...*podresourcesv1.ClaimResource) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Namespace: ns, Name: name, Containers: []*podresourcesv1.ContainerResources{{
		Name:             ctr,
		DynamicResources: []*podresourcesv1.DynamicResource{{ClaimName: claim, ClaimNamespace: ns, ClaimResources: devs}},
	}}}
}

func claimed(driver, pool, device string) *podresourcesv1.ClaimResource {
	return &podresourcesv1.ClaimResource{DriverName: driver, PoolName: pool, DeviceName: device,
		CdiDevices: []*podresourcesv1.CDIDevice{{Name: "k8s." + driver + "/claim=" + device}}}
}

func TestFetchReadsDRAClaims(t *testing.T) {
	both := draPod("ml", "train", "main", "train-gpus", claimed("gpu.nvidia.com", "node-a", "gpu-0"), claimed("gpu.nvidia.com", "node-a", "gpu-1"))
	// The same container also holds gpu-1 through a second claim.
	both.Containers[0].DynamicResources = append(both.Containers[0].DynamicResources,
		&podresourcesv1.DynamicResource{ClaimName: "extra", ClaimNamespace: "ml", ClaimResources: []*podresourcesv1.ClaimResource{claimed("gpu.nvidia.com", "node-a", "gpu-1")}})
	f := &testkit.Kubelet{
		ListReply: &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
			both,
			draPod("net", "router", "main", "nic", claimed("nic.example.com", "node-a", "eth1")),
			draPod("ml", "", "main", "x", claimed("gpu.nvidia.com", "node-a", "gpu-2")),
			draPod("ml", "broken", "main", "y", claimed("gpu.nvidia.com", "", "gpu-3")),
			draPod("inf", "mig", "server", "slice", claimed("gpu.nvidia.com", "node-a", "gpu-4-mig-1g10gb-0")),
			gpuPod("plugin", "p", "c", "nvidia.com/gpu", gpuUUID),
		}},
		AllocReply: &podresourcesv1.AllocatableResourcesResponse{},
	}
	c, _, _ := start(t, f, Config{})
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []ContainerClaim{
		{Namespace: "inf", Pod: "mig", Container: "server", ClaimName: "slice", Driver: "gpu.nvidia.com", Pool: "node-a", Device: "gpu-4-mig-1g10gb-0"},
		{Namespace: "ml", Pod: "train", Container: "main", ClaimName: "train-gpus", Driver: "gpu.nvidia.com", Pool: "node-a", Device: "gpu-0"},
		{Namespace: "ml", Pod: "train", Container: "main", ClaimName: "train-gpus", Driver: "gpu.nvidia.com", Pool: "node-a", Device: "gpu-1"},
	}
	if !reflect.DeepEqual(s.Claims, want) {
		t.Errorf("claims = %+v\nwant %+v", s.Claims, want)
	}
	if len(s.Containers) != 1 || s.Containers[0].Pod != "p" {
		t.Errorf("device-plugin containers = %+v", s.Containers)
	}
	if errs := c.Errors(); errs["empty_name"] != 1 || errs["malformed_claim"] != 1 {
		t.Errorf("errors = %v, want one empty_name and one malformed_claim", errs)
	}

	// Another driver list, and none at all.
	c2, _, _ := start(t, f, Config{DRADrivers: []string{"nic.example.com"}})
	if s, err := c2.Read(context.Background()); err != nil || len(s.Claims) != 1 || s.Claims[0].Device != "eth1" {
		t.Errorf("claims for nic.example.com = %+v, %v", s.Claims, err)
	}
	c3, _, _ := start(t, f, Config{DRADrivers: []string{}})
	if s, err := c3.Read(context.Background()); err != nil || len(s.Claims) != 0 {
		t.Errorf("claims with DRA off = %+v, %v", s.Claims, err)
	}
}
