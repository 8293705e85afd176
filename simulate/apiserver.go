package simulate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// PodUID is the deterministic UID of a simulated pod.
func PodUID(namespace, name string) string {
	h := sha256.Sum256([]byte("pod/" + namespace + "/" + name))
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// ContainerID is the deterministic runtime ID of a simulated container.
func ContainerID(namespace, pod, container string) string {
	h := sha256.Sum256([]byte("container/" + namespace + "/" + pod + "/" + container))
	return hex.EncodeToString(h[:])
}

// apiServer answers the list/watch requests the exporter's informers make
// (this node's pods and Node, and its ResourceSlices and the cluster's
// DeviceTaintRules, none, when the scenario has a DRA driver), so that on
// the simulated node the
// Kubernetes API path runs for real, over HTTP, through client-go. It is no
// general API server: anything else is 404.
type apiServer struct {
	srv    *http.Server
	url    string
	pods   *corev1.PodList
	nodes  *corev1.NodeList
	slices *resourcev1.ResourceSliceList // nil without DRA
	stop   chan struct{}
}

func startAPIServer(pods *corev1.PodList, nodes *corev1.NodeList, rs *resourcev1.ResourceSliceList) (*apiServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("simulated API server: %w", err)
	}
	a := &apiServer{url: "http://" + l.Addr().String(), pods: pods, nodes: nodes, slices: rs, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/pods", func(w http.ResponseWriter, r *http.Request) {
		a.serve(w, r, a.pods, "v1", "Pod", podItems(a.pods))
	})
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		a.serve(w, r, a.nodes, "v1", "Node", nodeItems(a.nodes))
	})
	if rs != nil {
		mux.HandleFunc("GET /apis/resource.k8s.io/v1/resourceslices", func(w http.ResponseWriter, r *http.Request) {
			items := make([]any, len(a.slices.Items))
			for i := range a.slices.Items {
				items[i] = &a.slices.Items[i]
			}
			a.serve(w, r, a.slices, "resource.k8s.io/v1", "ResourceSlice", items)
		})
		// No DeviceTaintRules: the node's devices are untainted.
		rules := &resourcev1.DeviceTaintRuleList{
			TypeMeta: metav1.TypeMeta{Kind: "DeviceTaintRuleList", APIVersion: "resource.k8s.io/v1"},
			ListMeta: metav1.ListMeta{ResourceVersion: "1"},
		}
		mux.HandleFunc("GET /apis/resource.k8s.io/v1/devicetaintrules", func(w http.ResponseWriter, r *http.Request) {
			a.serve(w, r, rules, "resource.k8s.io/v1", "DeviceTaintRule", nil)
		})
	}
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(l) }()
	return a, nil
}

// serve answers a list with the whole list (the simulated node holds only
// its own objects, so field selectors select everything), and a watch with
// an open stream. A watch asking for initial events (client-go's streaming
// list) first gets every object as ADDED and the bookmark that ends them;
// then nothing, until it times out or the server stops.
func (a *apiServer) serve(w http.ResponseWriter, r *http.Request, list any, apiVersion, kind string, items []any) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		_ = json.NewEncoder(w).Encode(list)
		return
	}
	timeout := 5 * time.Minute
	if s := q.Get("timeoutSeconds"); s != "" {
		if d, err := time.ParseDuration(s + "s"); err == nil {
			timeout = d
		}
	}
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	if q.Get("sendInitialEvents") == "true" {
		for _, obj := range items {
			_ = enc.Encode(map[string]any{"type": "ADDED", "object": obj})
		}
		_ = enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{
			"kind": kind, "apiVersion": apiVersion,
			"metadata": map[string]any{"resourceVersion": "1", "annotations": map[string]string{"k8s.io/initial-events-end": "true"}},
		}})
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-r.Context().Done():
	case <-a.stop:
	case <-time.After(timeout):
	}
}

func podItems(l *corev1.PodList) []any {
	out := make([]any, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out
}

func nodeItems(l *corev1.NodeList) []any {
	out := make([]any, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out
}

func (a *apiServer) close() {
	close(a.stop)
	_ = a.srv.Close()
}

// restConfig is how the exporter reaches the simulated API server.
func (a *apiServer) restConfig() *rest.Config {
	return &rest.Config{Host: a.url, UserAgent: "kube-gpu-exporter", QPS: 5, Burst: 10}
}

// buildAPIObjects derives the Node and Pods the API server would hold for
// the scenario: GPU requests/limits from each container's devices,
// capacity and allocatable from the scenario's allocatable lists, and
// container IDs matching the simulated processes' cgroups.
func (n *Node) buildAPIObjects() (*corev1.PodList, *corev1.NodeList) {
	pods := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
	for _, p := range n.scenario.Pods {
		pod := corev1.Pod{
			TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: types.UID(PodUID(p.Namespace, p.Name)), ResourceVersion: "1", Labels: p.Labels},
			Spec:       corev1.PodSpec{NodeName: n.Name},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if c := p.Controller; c != nil {
			yes := true
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: c.APIVersion, Kind: c.Kind, Name: c.Name,
				UID: types.UID(PodUID(p.Namespace, c.Kind+"/"+c.Name)), Controller: &yes}}
		}
		for _, c := range p.Containers {
			ctr := corev1.Container{Name: c.Name, Image: "registry.example/" + c.Name + ":sim"}
			if c.Claim != "" {
				claim := c.Claim
				ctr.Resources.Claims = []corev1.ResourceClaim{{Name: claim}}
				if !slices.ContainsFunc(pod.Spec.ResourceClaims, func(r corev1.PodResourceClaim) bool { return r.Name == claim }) {
					pod.Spec.ResourceClaims = append(pod.Spec.ResourceClaims, corev1.PodResourceClaim{Name: claim, ResourceClaimName: &claim})
				}
			} else if len(c.Devices) > 0 {
				q := *apiresource.NewQuantity(int64(len(c.Devices)), apiresource.DecimalSI)
				ctr.Resources.Requests = corev1.ResourceList{corev1.ResourceName(c.Resource): q}
				ctr.Resources.Limits = corev1.ResourceList{corev1.ResourceName(c.Resource): q}
			}
			pod.Spec.Containers = append(pod.Spec.Containers, ctr)
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Ready: true, ContainerID: "containerd://" + ContainerID(p.Namespace, p.Name, c.Name),
			})
		}
		pods.Items = append(pods.Items, pod)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    apiresource.MustParse("96"),
		corev1.ResourceMemory: apiresource.MustParse("1Ti"),
	}
	allocatable := capacity.DeepCopy()
	for _, d := range n.alloc.GetDevices() {
		q := *apiresource.NewQuantity(int64(len(d.GetDeviceIds())), apiresource.DecimalSI)
		name := corev1.ResourceName(d.GetResourceName())
		if cur, ok := allocatable[name]; ok {
			q.Add(cur)
		}
		capacity[name] = q
		allocatable[name] = q
	}
	node := corev1.Node{
		TypeMeta:   metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: types.UID(PodUID("node", n.Name)), ResourceVersion: "1"},
		Status:     corev1.NodeStatus{Capacity: capacity, Allocatable: allocatable},
	}
	return pods, &corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []corev1.Node{node}}
}

// buildResourceSlices is the ResourceSlice the scenario's DRA driver
// publishes for this node: one pool named after the node, each device with
// its NVML UUID in the uuid attribute as NVIDIA's driver sets it; nil
// without DRA.
func (n *Node) buildResourceSlices() *resourcev1.ResourceSliceList {
	dra := n.scenario.DRA
	if dra == nil {
		return nil
	}
	node := n.Name
	s := resourcev1.ResourceSlice{
		TypeMeta:   metav1.TypeMeta{Kind: "ResourceSlice", APIVersion: "resource.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: node + "-" + strings.ReplaceAll(dra.Driver, ".", "-"), UID: types.UID(PodUID("resourceslice", node)), ResourceVersion: "1"},
		Spec: resourcev1.ResourceSliceSpec{
			Driver:   dra.Driver,
			Pool:     resourcev1.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1},
			NodeName: &node,
		},
	}
	model := models[n.scenario.Model].Name
	for _, d := range dra.Devices {
		uuid, kind := deviceUUID(d), "gpu"
		if ref, _ := ParseDevice(d); ref.MIG >= 0 {
			kind = "mig"
		}
		s.Spec.Devices = append(s.Spec.Devices, resourcev1.Device{
			Name: DRADeviceName(d),
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				"type":        {StringValue: &kind},
				"uuid":        {StringValue: &uuid},
				"productName": {StringValue: &model},
			},
		})
	}
	return &resourcev1.ResourceSliceList{
		TypeMeta: metav1.TypeMeta{Kind: "ResourceSliceList", APIVersion: "resource.k8s.io/v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: "1"},
		Items:    []resourcev1.ResourceSlice{s},
	}
}

// cgroupPath is the cgroup v2 path (systemd driver, containerd) of a
// simulated container's processes.
func cgroupPath(namespace, pod, container string) string {
	uid := strings.ReplaceAll(PodUID(namespace, pod), "-", "_")
	return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice/cri-containerd-" + ContainerID(namespace, pod, container) + ".scope"
}
