package kube

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

func TestPodDeviceHealth(t *testing.T) {
	msg := "XID 79"
	pod := testPod("ml", "p", corev1.PodRunning, nil, nil)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "main",
		AllocatedResourcesStatus: []corev1.ResourceStatus{
			{Name: "nvidia.com/gpu", Resources: []corev1.ResourceHealth{
				{ResourceID: "GPU-a", Health: corev1.ResourceHealthStatusHealthy},
				{ResourceID: "GPU-b", Health: corev1.ResourceHealthStatusUnhealthy, Message: &msg},
			}},
			{Name: "example.com/fpga", Resources: []corev1.ResourceHealth{{ResourceID: "fpga-0", Health: corev1.ResourceHealthStatusUnhealthy}}},
			{Name: "claim:gpus/gpu", Resources: []corev1.ResourceHealth{{ResourceID: "gpu.nvidia.com/node-a/gpu-3", Health: corev1.ResourceHealthStatusUnknown}}},
			{Name: "claim:nic", Resources: []corev1.ResourceHealth{{ResourceID: "net.example.com/node-a/eth1", Health: corev1.ResourceHealthStatusHealthy}}},
		},
	}, {Name: "sidecar"}}
	want := []ContainerDeviceHealth{
		{Namespace: "ml", Pod: "p", Container: "main", Resource: "nvidia.com/gpu", ResourceID: "GPU-a", Health: "Healthy"},
		{Namespace: "ml", Pod: "p", Container: "main", Resource: "nvidia.com/gpu", ResourceID: "GPU-b", Health: "Unhealthy"},
		{Namespace: "ml", Pod: "p", Container: "main", Resource: "claim:gpus/gpu", ResourceID: "gpu.nvidia.com/node-a/gpu-3", Health: "Unknown"},
	}
	drivers := resource.DefaultDRADrivers()
	if got := PodDeviceHealth(pod, nil, drivers); !reflect.DeepEqual(got, want) {
		t.Errorf("PodDeviceHealth =\n%+v\nwant\n%+v", got, want)
	}

	// The cache keeps these entries, without their messages, and nothing else.
	out, err := podTransform(nil, drivers)(pod)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*corev1.Pod)
	if got := PodDeviceHealth(slim, nil, drivers); !reflect.DeepEqual(got, want) {
		t.Errorf("after the transform =\n%+v\nwant\n%+v", got, want)
	}
	kept := slim.Status.ContainerStatuses[0].AllocatedResourcesStatus
	if len(kept) != 2 || kept[0].Resources[1].Message != nil {
		t.Errorf("transform kept %+v", kept)
	}
	if slim.Status.ContainerStatuses[1].AllocatedResourcesStatus != nil {
		t.Errorf("an empty status became %+v", slim.Status.ContainerStatuses[1].AllocatedResourcesStatus)
	}

	pod.Status.Phase = corev1.PodFailed
	if got := PodDeviceHealth(pod, nil, drivers); got != nil {
		t.Errorf("terminal pod: %+v", got)
	}
}
