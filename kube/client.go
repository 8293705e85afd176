package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Client is the part of the Kubernetes API the Watcher reads: list and watch
// of pods, nodes, ResourceSlices and DeviceTaintRules. NewClient implements it with a REST
// client that knows only those types. client-go's full clientset would do
// too, but it registers every API group of Kubernetes at start-up; on a
// node agent that runs on every GPU node, that is tens of MiB of binary and
// resident memory for types never read. Tests adapt the fake clientset with
// package kubetest.
type Client interface {
	ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	WatchPods(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	ListResourceSlices(ctx context.Context, opts metav1.ListOptions) (*resourcev1.ResourceSliceList, error)
	WatchResourceSlices(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	ListDeviceTaintRules(ctx context.Context, opts metav1.ListOptions) (*resourcev1.DeviceTaintRuleList, error)
	WatchDeviceTaintRules(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// restClient implements Client over two REST clients: the core group and
// resource.k8s.io/v1.
type restClient struct {
	core, resource *rest.RESTClient
	params         runtime.ParameterCodec
}

// NewClient builds a Client for cfg (see RESTConfig) whose scheme holds only
// core/v1 and resource.k8s.io/v1.
func NewClient(cfg *rest.Config) (Client, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, resourcev1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("kubernetes scheme: %w", err)
		}
	}
	// metav1 types (Status, WatchEvent, ListOptions) in the core group's version.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	codecs := serializer.NewCodecFactory(scheme)
	build := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = apiPath
		c.NegotiatedSerializer = codecs.WithoutConversion()
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		rc, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
		}
		return rc, nil
	}
	core, err := build(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	res, err := build(resourcev1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &restClient{core: core, resource: res, params: runtime.NewParameterCodec(scheme)}, nil
}

func (c *restClient) list(ctx context.Context, rc *rest.RESTClient, res string, opts metav1.ListOptions, into runtime.Object) error {
	req := rc.Get().Resource(res).VersionedParams(&opts, c.params)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Do(ctx).Into(into)
}

func (c *restClient) watch(ctx context.Context, rc *rest.RESTClient, res string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	req := rc.Get().Resource(res).VersionedParams(&opts, c.params)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Watch(ctx)
}

func (c *restClient) ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	return out, c.list(ctx, c.core, "pods", opts, out)
}

func (c *restClient) WatchPods(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "pods", opts)
}

func (c *restClient) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	return out, c.list(ctx, c.core, "nodes", opts, out)
}

func (c *restClient) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "nodes", opts)
}

func (c *restClient) ListResourceSlices(ctx context.Context, opts metav1.ListOptions) (*resourcev1.ResourceSliceList, error) {
	out := &resourcev1.ResourceSliceList{}
	return out, c.list(ctx, c.resource, "resourceslices", opts, out)
}

func (c *restClient) WatchResourceSlices(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.resource, "resourceslices", opts)
}

func (c *restClient) ListDeviceTaintRules(ctx context.Context, opts metav1.ListOptions) (*resourcev1.DeviceTaintRuleList, error) {
	out := &resourcev1.DeviceTaintRuleList{}
	return out, c.list(ctx, c.resource, "devicetaintrules", opts, out)
}

func (c *restClient) WatchDeviceTaintRules(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.resource, "devicetaintrules", opts)
}
