package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// slimMeta keeps the identity of an object and drops labels, annotations,
// managed fields, owner references and the like, which on a busy node make
// up most of an informer's memory and are never read here.
func slimMeta(in *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            in.Name,
		Namespace:       in.Namespace,
		UID:             in.UID,
		ResourceVersion: in.ResourceVersion,
	}
}

// podTransform returns a cache.TransformFunc that rebuilds pods with only
// what the exporter reads: container names, their GPU requests/limits and
// sidecar restart policy, the phase, container statuses (name, ID and the
// health of their GPU devices), and
// for PodWorkloadOf the controller's owner reference and the few workload
// controllers' labels (workloadLabels).
// Building new objects rather than editing in place lets the decoded
// originals be garbage collected. The function is idempotent, as client-go
// recommends, and passes other objects (such as
// cache.DeletedFinalStateUnknown tombstones) through unchanged.
func podTransform(m *resource.Matcher, drivers []string) cache.TransformFunc {
	m = defaultMatcher(m)
	slimContainers := func(in []corev1.Container) []corev1.Container {
		if len(in) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(in))
		for i := range in {
			out[i] = corev1.Container{
				Name:          in[i].Name,
				RestartPolicy: in[i].RestartPolicy,
				Resources: corev1.ResourceRequirements{
					Requests: gpuResourceList(in[i].Resources.Requests, m),
					Limits:   gpuResourceList(in[i].Resources.Limits, m),
				},
			}
		}
		return out
	}
	slimStatuses := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		if len(in) == 0 {
			return nil
		}
		out := make([]corev1.ContainerStatus, len(in))
		for i := range in {
			out[i] = corev1.ContainerStatus{
				Name: in[i].Name, ContainerID: in[i].ContainerID,
				AllocatedResourcesStatus: slimResourceStatus(in[i].AllocatedResourcesStatus, m, drivers),
			}
		}
		return out
	}
	return func(obj any) (any, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		var ephemeral []corev1.EphemeralContainer
		for _, c := range pod.Spec.EphemeralContainers {
			ephemeral = append(ephemeral, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name},
			})
		}
		meta := slimMeta(&pod.ObjectMeta)
		meta.Labels = keepLabels(pod.Labels, workloadLabels)
		if o := metav1.GetControllerOfNoCopy(pod); o != nil {
			meta.OwnerReferences = []metav1.OwnerReference{{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, UID: o.UID, Controller: o.Controller}}
		}
		return &corev1.Pod{
			ObjectMeta: meta,
			Spec: corev1.PodSpec{
				NodeName:            pod.Spec.NodeName,
				InitContainers:      slimContainers(pod.Spec.InitContainers),
				Containers:          slimContainers(pod.Spec.Containers),
				EphemeralContainers: ephemeral,
			},
			Status: corev1.PodStatus{
				Phase:                      pod.Status.Phase,
				InitContainerStatuses:      slimStatuses(pod.Status.InitContainerStatuses),
				ContainerStatuses:          slimStatuses(pod.Status.ContainerStatuses),
				EphemeralContainerStatuses: slimStatuses(pod.Status.EphemeralContainerStatuses),
			},
		}, nil
	}
}

// nodeTransform returns a cache.TransformFunc that keeps only a node's
// identity and the GPU entries of its capacity and allocatable; images,
// conditions, addresses and labels are dropped. Idempotent; non-nodes pass
// through unchanged.
func nodeTransform(m *resource.Matcher) cache.TransformFunc {
	return func(obj any) (any, error) {
		node, ok := obj.(*corev1.Node)
		if !ok {
			return obj, nil
		}
		return &corev1.Node{
			ObjectMeta: slimMeta(&node.ObjectMeta),
			Status: corev1.NodeStatus{
				Capacity:    gpuResourceList(node.Status.Capacity, m),
				Allocatable: gpuResourceList(node.Status.Allocatable, m),
			},
		}, nil
	}
}

// keepLabels returns the entries of labels named in keys, nil when none.
func keepLabels(labels map[string]string, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := labels[k]; ok {
			if out == nil {
				out = make(map[string]string, 2)
			}
			out[k] = v
		}
	}
	return out
}
