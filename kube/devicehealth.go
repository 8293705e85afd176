package kube

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// ContainerDeviceHealth is what the kubelet wrote into a container's status
// (status.containerStatuses[].allocatedResourcesStatus, KEP-4680) about one
// device allocated to it, as its device plugin or DRA driver reported it.
type ContainerDeviceHealth struct {
	Namespace, Pod, Container string
	// Resource is the extended resource ("nvidia.com/gpu") or, for a DRA
	// claim, "claim:<claim>[/<request>]".
	Resource string
	// ResourceID is the device plugin's device ID, or for DRA
	// "<driver>/<pool>/<device>".
	ResourceID string
	// Health is Healthy, Unhealthy or Unknown as the kubelet spells it.
	Health string
}

// claimPrefix starts the status name of a device allocated through a DRA
// claim.
const claimPrefix = "claim:"

// isGPUResourceStatus reports whether an allocatedResourcesStatus entry is
// about GPUs: an extended resource m counts as a GPU, or a claim whose
// devices belong to one of the GPU DRA drivers.
func isGPUResourceStatus(rs *corev1.ResourceStatus, m *resource.Matcher, drivers []string) bool {
	name := string(rs.Name)
	if !strings.HasPrefix(name, claimPrefix) {
		_, ok := m.Vendor(name)
		return ok
	}
	for _, r := range rs.Resources {
		if driver, _, ok := strings.Cut(string(r.ResourceID), "/"); ok && slices.Contains(drivers, driver) {
			return true
		}
	}
	return false
}

// PodDeviceHealth lists, for a pod that is not terminal, the health the
// kubelet reports for each GPU device allocated to its containers, in the
// order of the pod's status. The kubelet (1.36 and newer, or 1.31 with the
// ResourceHealthStatus feature gate) fills it for running containers only.
func PodDeviceHealth(pod *corev1.Pod, m *resource.Matcher, drivers []string) []ContainerDeviceHealth {
	if pod == nil || podIsTerminal(pod) {
		return nil
	}
	m = defaultMatcher(m)
	var out []ContainerDeviceHealth
	for _, statuses := range [][]corev1.ContainerStatus{
		pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses,
	} {
		for i := range statuses {
			for j := range statuses[i].AllocatedResourcesStatus {
				rs := &statuses[i].AllocatedResourcesStatus[j]
				if !isGPUResourceStatus(rs, m, drivers) {
					continue
				}
				for _, r := range rs.Resources {
					out = append(out, ContainerDeviceHealth{
						Namespace: pod.Namespace, Pod: pod.Name, Container: statuses[i].Name,
						Resource: string(rs.Name), ResourceID: string(r.ResourceID), Health: string(r.Health),
					})
				}
			}
		}
	}
	return out
}

// compareDeviceHealth orders entries by container, then device, so that
// the exposition is stable between scrapes.
func compareDeviceHealth(a, b ContainerDeviceHealth) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.Container, b.Container),
		cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.ResourceID, b.ResourceID))
}

// slimResourceStatus keeps the GPU entries of an allocatedResourcesStatus
// (resource, device IDs and health; messages dropped), nil when none.
func slimResourceStatus(in []corev1.ResourceStatus, m *resource.Matcher, drivers []string) []corev1.ResourceStatus {
	var out []corev1.ResourceStatus
	for i := range in {
		if !isGPUResourceStatus(&in[i], m, drivers) {
			continue
		}
		rs := corev1.ResourceStatus{Name: in[i].Name, Resources: make([]corev1.ResourceHealth, len(in[i].Resources))}
		for j, r := range in[i].Resources {
			rs.Resources[j] = corev1.ResourceHealth{ResourceID: r.ResourceID, Health: r.Health}
		}
		out = append(out, rs)
	}
	return out
}
