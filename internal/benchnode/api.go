package benchnode

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
)

// NodeName is the node the API cases' pods are bound to.
const NodeName = "gpu-node-01"

// APICases are the three ways of sharing 8 GPUs again, at the kubelet's
// default pod limit, with the Kubernetes API as a source too: pod specs
// (requests, limits, owners) and the Node, as a production exporter reads
// them.
func APICases() []Case {
	var out []Case
	for _, c := range Cases()[:3] {
		c.API = true
		c.Name += "-api"
		out = append(out, c)
	}
	return out
}

// APIObjects are the Node and the pods of the kubelet reply as the API
// server holds them: each created by a Deployment's ReplicaSet (the
// <name>-<hash>-<suffix> names of PodResources), the GPU holders requesting
// one device of the case's resource, with its health in their status.
func (c Case) APIObjects() []runtime.Object {
	list, _ := c.PodResources()
	yes := true
	objs := make([]runtime.Object, 0, len(list.PodResources)+1)
	for _, p := range list.PodResources {
		rs := p.Name[:strings.LastIndexByte(p.Name, '-')]
		hash := rs[strings.LastIndexByte(rs, '-')+1:]
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: p.Namespace, Name: p.Name, UID: types.UID("uid-" + p.Name),
				Labels:          map[string]string{"app": rs, "pod-template-hash": hash},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: types.UID("uid-" + rs), Controller: &yes}},
			},
			Spec:   corev1.PodSpec{NodeName: NodeName},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		for _, ctr := range p.Containers {
			spec := corev1.Container{Name: ctr.Name, Image: "registry.example/" + ctr.Name + ":1"}
			if len(ctr.Devices) > 0 {
				n := *apiresource.NewQuantity(int64(len(ctr.Devices[0].DeviceIds)), apiresource.DecimalSI)
				spec.Resources.Limits = corev1.ResourceList{corev1.ResourceName(ctr.Devices[0].ResourceName): n}
			}
			pod.Spec.Containers = append(pod.Spec.Containers, spec)
			st := corev1.ContainerStatus{Name: ctr.Name, Ready: true, ContainerID: fmt.Sprintf("containerd://%s-%s", p.Name, ctr.Name)}
			// The health of each allocated device, as a 1.36+ kubelet writes it.
			for _, d := range ctr.Devices {
				rs := corev1.ResourceStatus{Name: corev1.ResourceName(d.ResourceName)}
				for _, id := range d.DeviceIds {
					rs.Resources = append(rs.Resources, corev1.ResourceHealth{ResourceID: corev1.ResourceID(id), Health: corev1.ResourceHealthStatusHealthy})
				}
				st.AllocatedResourcesStatus = append(st.AllocatedResourcesStatus, rs)
			}
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, st)
		}
		objs = append(objs, pod)
	}
	gpus := *apiresource.NewQuantity(int64(c.Holders()), apiresource.DecimalSI)
	objs = append(objs, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceName(c.Resource()): gpus},
			Allocatable: corev1.ResourceList{corev1.ResourceName(c.Resource()): gpus},
		},
	})
	return objs
}

// StartAPI runs a kube.Watcher over client-go's fake clientset holding the
// case's APIObjects until ctx ends, and returns it once its cache is caught
// up, as the exporter's Kubernetes source. It returns the Watcher with any
// error too: the caller cancels ctx and waits for it either way.
func (c Case) StartAPI(ctx context.Context) (*kube.Watcher, error) {
	client := kubetest.FromClientset(fake.NewClientset(c.APIObjects()...))
	w := kube.NewWatcher(client, kube.Config{NodeName: NodeName}, nil)
	w.Start(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if !w.WaitForSync(syncCtx) {
		err = fmt.Errorf("%s: informers did not sync", c.Name)
	}
	for err == nil && !w.Snapshot().Healthy {
		if syncCtx.Err() != nil {
			err = fmt.Errorf("%s: cache not caught up: %w", c.Name, syncCtx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w, err
}
