// Package kubetest adapts client-go's fake clientset to kube.Client, so
// tests drive the Watcher's real informers through the fake's object tracker
// and reactors. It is imported by tests only: the exporter itself never
// links the full clientset.
package kubetest

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Clientset is a kube.Client over any clientset, the fake one in tests. (It
// satisfies the interface structurally: importing package kube here would
// keep kube's own tests from using it.)
type Clientset struct {
	kubernetes.Interface
}

// FromClientset wraps a clientset.
func FromClientset(c kubernetes.Interface) Clientset { return Clientset{c} }

// IsWatchListSemanticsUnSupported passes on the fake clientset's answer, so
// the informers fall back to list+watch as they do on the bare fake.
func (c Clientset) IsWatchListSemanticsUnSupported() bool {
	if u, ok := c.Interface.(interface{ IsWatchListSemanticsUnSupported() bool }); ok {
		return u.IsWatchListSemanticsUnSupported()
	}
	return false
}

func (c Clientset) ListPods(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
	return c.CoreV1().Pods(metav1.NamespaceAll).List(ctx, o)
}

func (c Clientset) WatchPods(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, o)
}

func (c Clientset) ListNodes(ctx context.Context, o metav1.ListOptions) (*corev1.NodeList, error) {
	return c.CoreV1().Nodes().List(ctx, o)
}

func (c Clientset) WatchNodes(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.CoreV1().Nodes().Watch(ctx, o)
}

func (c Clientset) ListResourceSlices(ctx context.Context, o metav1.ListOptions) (*resourcev1.ResourceSliceList, error) {
	return c.ResourceV1().ResourceSlices().List(ctx, o)
}

func (c Clientset) WatchResourceSlices(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.ResourceV1().ResourceSlices().Watch(ctx, o)
}

func (c Clientset) ListDeviceTaintRules(ctx context.Context, o metav1.ListOptions) (*resourcev1.DeviceTaintRuleList, error) {
	return c.ResourceV1().DeviceTaintRules().List(ctx, o)
}

func (c Clientset) WatchDeviceTaintRules(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.ResourceV1().DeviceTaintRules().Watch(ctx, o)
}
