package kube

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// Config selects what a Watcher reads.
type Config struct {
	// NodeName is the node this exporter runs on (the downward API's
	// spec.nodeName). Only this Node and the pods bound to it are read.
	NodeName string
	// Matcher decides which resources are GPUs; nil means
	// resource.DefaultAll.
	Matcher *resource.Matcher
	// Resync is the informers' resync period. Resyncs replay the cache and
	// never contact the API server; 0 disables them, which is fine because
	// Snapshot reads the stores directly.
	Resync time.Duration
	// DRA adds a third informer, on this node's ResourceSlices
	// (resource.k8s.io/v1), to resolve devices allocated through DRA claims
	// and count the devices DRADrivers publish.
	DRA bool
	// DRADrivers are the DRA drivers whose devices are GPUs; nil means
	// resource.DefaultDRADrivers().
	DRADrivers []string
}

// Snapshot is a consistent-enough view of the node's pods and Node object
// taken from the informer caches. It is built without any API call, so the
// scrape path never waits on the API server. Its slices and lookups are
// freshly built for each Snapshot and may be kept by the caller.
type Snapshot struct {
	// Synced is true once the pod and node informers completed their
	// first list.
	Synced bool
	// Healthy is true while the pod and node caches are caught up with the
	// API server: it turns false on any failed request or expired watch and
	// true again once a relist after it completed and its watch is open
	// (see the package documentation). While false the data below is the
	// last state the informers saw.
	Healthy bool
	// LastError is the most recent list/watch error, kept after recovery
	// for diagnostics; nil if there never was one.
	LastError error
	// ListErrors and WatchErrors count failed list and watch requests of
	// pods and nodes since the Watcher was created; DRAErrors those of
	// ResourceSlices.
	ListErrors, WatchErrors, DRAErrors uint64

	// Containers holds one entry per container and GPU resource of every
	// non-terminal pod on the node, sorted.
	Containers []ContainerResources
	// Pods holds the effective GPU request of every non-terminal pod on
	// the node per resource (PodGPURequests), sorted.
	Pods []resource.PodResource
	// Node is the GPU capacity/allocatable of this node.
	Node NodeResources
	// DeviceHealth is the kubelet's health of every GPU device allocated
	// to a container of a non-terminal pod (PodDeviceHealth), sorted.
	DeviceHealth []ContainerDeviceHealth

	// DRA is, when the ResourceSlice informer runs, the devices each DRA
	// driver publishes for this node, sorted by driver; nil otherwise.
	DRA []DRADriver
	// DRAEnabled is true when the ResourceSlice informer runs and has
	// listed once.
	DRAEnabled bool
	// DRATaints are the taints on the GPU devices of this node's
	// ResourceSlices, their own and DeviceTaintRules' (DeviceTaints).
	DRATaints []DRADeviceTaint

	pods       map[string]PodRef
	containers map[string]ContainerRef
	draUUIDs   map[DRADevice]string
	podStore   cache.Store
}

// PodWorkload returns the workload of a pod on this node (PodWorkloadOf),
// terminal pods included. It reads the pod cache when asked, so that a
// scrape names the workloads of its GPU pods only, not of every pod.
func (s Snapshot) PodWorkload(namespace, pod string) (Workload, bool) {
	if s.podStore == nil {
		return Workload{}, false
	}
	obj, ok, err := s.podStore.GetByKey(namespace + "/" + pod)
	if err != nil || !ok {
		return Workload{}, false
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return Workload{}, false
	}
	return PodWorkloadOf(p), true
}

// DRADeviceUUID returns the NVML UUID (the uuid attribute in this node's
// ResourceSlices) of a device allocated through a DRA claim.
func (s Snapshot) DRADeviceUUID(driver, pool, device string) (string, bool) {
	u, ok := s.draUUIDs[DRADevice{Driver: driver, Pool: pool, Device: device}]
	return u, ok
}

// DRADeviceUUIDs returns the NVML UUIDs of every device this node's
// ResourceSlices publish, sorted.
func (s Snapshot) DRADeviceUUIDs() []string {
	out := make([]string, 0, len(s.draUUIDs))
	for _, u := range s.draUUIDs {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// PodByUID returns the pod with the given UID, terminal pods included, for
// attributing a GPU process found through its cgroup's pod UID.
func (s Snapshot) PodByUID(uid string) (PodRef, bool) {
	p, ok := s.pods[uid]
	return p, ok
}

// ContainerByID returns the container whose status carries the given
// runtime ID, with or without the "<runtime>://" scheme. Init, regular and
// ephemeral containers are all known.
func (s Snapshot) ContainerByID(id string) (ContainerRef, bool) {
	c, ok := s.containers[ContainerIDFromStatus(id)]
	return c, ok
}

// Watcher keeps this node's Node object and its pods in two informer caches
// and derives GPU requests, limits, capacity and allocatable from them.
// It is safe for concurrent use.
type Watcher struct {
	cfg    Config
	logger *slog.Logger

	podInformer   cache.SharedIndexInformer
	nodeInformer  cache.SharedIndexInformer
	sliceInformer cache.SharedIndexInformer // nil unless Config.DRA
	ruleInformer  cache.SharedIndexInformer // nil unless Config.DRA

	pods, nodes, slices, rules sourceHealth

	startOnce sync.Once
	running   sync.WaitGroup // the informers' goroutines
}

// NewWatcher creates the two informers (Node by metadata.name, Pods by
// spec.nodeName, so that nothing cluster-wide is listed or watched) without
// starting them. logger may be nil.
func NewWatcher(client Client, cfg Config, logger *slog.Logger) *Watcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Matcher = defaultMatcher(cfg.Matcher)
	if cfg.DRADrivers == nil {
		cfg.DRADrivers = resource.DefaultDRADrivers()
	}
	w := &Watcher{cfg: cfg, logger: logger.With("component", "kubernetes")}
	w.pods.kind, w.nodes.kind = "pods", "nodes"
	w.slices.kind, w.slices.optional = "resourceslices", true
	w.slices.note = "; DRA devices, requests and capacity come from the kubelet and NVML until it succeeds"
	w.rules.kind, w.rules.optional = "devicetaintrules", true
	w.rules.note = "; DeviceTaintRules' taints are not served until it succeeds (Kubernetes 1.37 serves them in resource.k8s.io/v1)"

	podSelector := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	nodeSelector := fields.OneTermEqualSelector("metadata.name", cfg.NodeName).String()

	w.podInformer = w.newInformer(client, &corev1.Pod{}, podTransform(cfg.Matcher, cfg.DRADrivers), &w.pods,
		func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = podSelector
			return client.ListPods(ctx, opts)
		},
		func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = podSelector
			return client.WatchPods(ctx, opts)
		})
	w.nodeInformer = w.newInformer(client, &corev1.Node{}, nodeTransform(cfg.Matcher), &w.nodes,
		func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = nodeSelector
			return client.ListNodes(ctx, opts)
		},
		func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = nodeSelector
			return client.WatchNodes(ctx, opts)
		})
	if cfg.DRA {
		// Only slices of devices local to this node: drivers of node-local
		// devices such as GPUs publish their pools with spec.nodeName set.
		sliceSelector := fields.OneTermEqualSelector(resourcev1.ResourceSliceSelectorNodeName, cfg.NodeName).String()
		w.sliceInformer = w.newInformer(client, &resourcev1.ResourceSlice{}, sliceTransform(), &w.slices,
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.FieldSelector = sliceSelector
				return client.ListResourceSlices(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.FieldSelector = sliceSelector
				return client.WatchResourceSlices(ctx, opts)
			})
		// DeviceTaintRules are cluster-scoped and select devices by driver,
		// pool and name, not by node: all are read. There are few (an
		// administrator's, or a health controller's per faulty device).
		w.ruleInformer = w.newInformer(client, &resourcev1.DeviceTaintRule{}, ruleTransform(), &w.rules,
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				return client.ListDeviceTaintRules(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				return client.WatchDeviceTaintRules(ctx, opts)
			})
	}
	return w
}

type (
	listFunc  func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)
)

// newInformer wraps list and watch so that every request outcome updates
// h (see health.go): this is where failures are counted and logged, and
// where a cache that caught up again is detected.
func (w *Watcher) newInformer(client Client, obj runtime.Object,
	transform cache.TransformFunc, h *sourceHealth, list listFunc, watchFn watchFunc,
) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return w.list(ctx, h, list, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return w.watch(ctx, h, watchFn, opts)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(
		// Keeps client-go's detection of clients that cannot stream lists
		// (the fake clientset) while using our own list/watch functions.
		cache.ToListWatcherWithWatchListSemantics(lw, client),
		obj,
		cache.SharedIndexInformerOptions{ResyncPeriod: w.cfg.Resync, Indexers: cache.Indexers{}},
	)
	// Both setters fail only once the informer runs; it has not started yet.
	_ = inf.SetTransform(transform)
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		// Called when a list/watch cycle ends in error; the reflector lists
		// again next, and until then the cache may be behind. The request
		// that failed, if any, was counted and logged by list or watch.
		if ctx.Err() != nil {
			return
		}
		w.expired(h, err)
	})
	return inf
}

// Start runs the informers until ctx is cancelled; Wait then waits for them
// to return. client-go's own logs are routed to the Watcher's logger.
// Calling Start more than once has no further effect.
func (w *Watcher) Start(ctx context.Context) {
	w.startOnce.Do(func() {
		ctx = klog.NewContext(ctx, logr.FromSlogHandler(w.logger.Handler()))
		w.running.Go(func() { w.podInformer.RunWithContext(ctx) })
		w.running.Go(func() { w.nodeInformer.RunWithContext(ctx) })
		if w.sliceInformer != nil {
			w.running.Go(func() { w.sliceInformer.RunWithContext(ctx) })
			w.running.Go(func() { w.ruleInformer.RunWithContext(ctx) })
		}
	})
}

// Wait blocks until the informers Start started have returned, which they
// do once Start's ctx is cancelled: a shutdown that calls it leaves no
// watch or goroutine behind. Without Start it returns at once.
func (w *Watcher) Wait() { w.running.Wait() }

// WaitForSync blocks until the pod and node informers have completed their
// first list or ctx ends, and reports whether they synced. The optional
// ResourceSlice informer is not waited for.
func (w *Watcher) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), w.podInformer.HasSynced, w.nodeInformer.HasSynced)
}

// Snapshot reads the informer caches; it makes no API call and costs one
// pass over the pods bound to this node.
func (w *Watcher) Snapshot() Snapshot {
	s := Snapshot{
		Synced:      w.podInformer.HasSynced() && w.nodeInformer.HasSynced(),
		Healthy:     w.pods.isHealthy() && w.nodes.isHealthy(),
		ListErrors:  w.pods.listErrors.Load() + w.nodes.listErrors.Load(),
		WatchErrors: w.pods.watchErrors.Load() + w.nodes.watchErrors.Load(),
		DRAErrors:   w.slices.listErrors.Load() + w.slices.watchErrors.Load() + w.rules.listErrors.Load() + w.rules.watchErrors.Load(),
		pods:        map[string]PodRef{},
		containers:  map[string]ContainerRef{},
		podStore:    w.podInformer.GetStore(),
	}
	s.LastError = w.nodes.lastError()
	if err := w.pods.lastError(); err != nil && (s.LastError == nil || !w.pods.isHealthy()) {
		s.LastError = err
	}

	for _, obj := range w.podInformer.GetStore().List() {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			continue
		}
		s.Containers = append(s.Containers, PodContainerResources(pod, w.cfg.Matcher)...)
		s.Pods = append(s.Pods, PodGPURequests(pod, w.cfg.Matcher)...)
		s.DeviceHealth = append(s.DeviceHealth, PodDeviceHealth(pod, w.cfg.Matcher, w.cfg.DRADrivers)...)
		s.pods[string(pod.UID)] = PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
		podContainerIDs(pod, s.containers)
	}
	slices.SortFunc(s.Containers, compareContainerResources)
	slices.SortFunc(s.DeviceHealth, compareDeviceHealth)
	resource.SortPodResources(s.Pods)

	if obj, ok, err := w.nodeInformer.GetStore().GetByKey(w.cfg.NodeName); err == nil && ok {
		if node, ok := obj.(*corev1.Node); ok {
			s.Node = NodeGPUResources(node, w.cfg.Matcher)
		}
	}
	// The ResourceSlices are optional: until they are listed (a missing
	// permission, an API server without resource.k8s.io/v1) DRA is treated
	// as not in use rather than failing the whole source.
	if w.sliceInformer != nil && w.sliceInformer.HasSynced() {
		var list []*resourcev1.ResourceSlice
		for _, obj := range w.sliceInformer.GetStore().List() {
			if sl, ok := obj.(*resourcev1.ResourceSlice); ok {
				list = append(list, sl)
			}
		}
		s.DRAEnabled = true
		s.draUUIDs, s.DRA = ResourceSliceDevices(list, w.cfg.DRADrivers)
		var rules []*resourcev1.DeviceTaintRule
		if w.ruleInformer.HasSynced() {
			for _, obj := range w.ruleInformer.GetStore().List() {
				if r, ok := obj.(*resourcev1.DeviceTaintRule); ok {
					rules = append(rules, r)
				}
			}
		}
		s.DRATaints = DeviceTaints(list, rules, w.cfg.DRADrivers)
	}
	return s
}
