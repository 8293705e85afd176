package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	// Synced is true once both informers completed their first list.
	Synced bool
	// Healthy is true while both informers have an open watch: it turns
	// false on any failed list or watch request and true again when the
	// next watch opens (see the package documentation). While false the
	// data below is the last state the informers saw.
	Healthy bool
	// LastError is the most recent list/watch error, kept after recovery
	// for diagnostics; nil if there never was one.
	LastError error
	// ListErrors and WatchErrors count failed list and watch requests since
	// the Watcher was created.
	ListErrors, WatchErrors uint64

	// Containers holds one entry per container and GPU resource of every
	// non-terminal pod on the node, sorted.
	Containers []ContainerResources
	// Node is the GPU capacity/allocatable of this node.
	Node NodeResources

	// DRA is, when the ResourceSlice informer runs, the devices each DRA
	// driver publishes for this node, sorted by driver; nil otherwise.
	DRA []DRADriver
	// DRAEnabled is true when the ResourceSlice informer runs.
	DRAEnabled bool

	pods       map[string]PodRef
	containers map[string]ContainerRef
	draUUIDs   map[DRADevice]string
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

	pods, nodes, slices sourceHealth

	mu      sync.Mutex // guards lastErr
	lastErr error

	listErrors, watchErrors atomic.Uint64
	startOnce               sync.Once
	running                 sync.WaitGroup // the informers' goroutines
}

// sourceHealth tracks whether one informer's watch is established with no
// request failed since.
type sourceHealth struct {
	ok atomic.Bool
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

	podSelector := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	nodeSelector := fields.OneTermEqualSelector("metadata.name", cfg.NodeName).String()

	w.podInformer = w.newInformer(client, "pods", &corev1.Pod{}, podTransform(cfg.Matcher), &w.pods,
		func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = podSelector
			return client.ListPods(ctx, opts)
		},
		func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = podSelector
			return client.WatchPods(ctx, opts)
		})
	w.nodeInformer = w.newInformer(client, "nodes", &corev1.Node{}, nodeTransform(cfg.Matcher), &w.nodes,
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
		w.sliceInformer = w.newInformer(client, "resourceslices", &resourcev1.ResourceSlice{}, sliceTransform(), &w.slices,
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.FieldSelector = sliceSelector
				return client.ListResourceSlices(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.FieldSelector = sliceSelector
				return client.WatchResourceSlices(ctx, opts)
			})
	}
	return w
}

type (
	listFunc  func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)
)

// newInformer wraps list and watch so that every request outcome updates
// health: this is where recovery is detected, because an opened watch is
// the proof that the API server answers again and that the cache follows it.
func (w *Watcher) newInformer(client Client, kind string, obj runtime.Object,
	transform cache.TransformFunc, h *sourceHealth, list listFunc, watchFn watchFunc,
) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			out, err := list(ctx, opts)
			w.observe(ctx, h, kind, "list", err)
			// Returned as is: the reflector classifies API errors (410,
			// 429, too large resource version) partly by type assertion
			// and already names the resource in its own messages.
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			out, err := watchFn(ctx, opts)
			// A streaming list (watch with initial events) that fails makes
			// the reflector fall back to a plain list, whose outcome counts.
			if err == nil || opts.SendInitialEvents == nil || !*opts.SendInitialEvents {
				w.observe(ctx, h, kind, "watch", err)
			}
			return out, err
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
		// Called when a list/watch cycle ends in error. A watch closed for
		// an expired resource version, or at end of stream, is routine: the
		// reflector relists and the API server is fine.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
			apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || ctx.Err() != nil {
			w.logger.Debug("watch closed", "resource", kind, "err", err)
			return
		}
		w.markUnhealthy(h, kind, err)
	})
	return inf
}

// observe records the outcome of one list or watch request. Any failure
// makes the informer unhealthy; only an opened watch makes it healthy
// again, because a list alone does not prove the informer follows changes
// (an API server may allow list but refuse watch, and the reflector always
// lists before it watches).
func (w *Watcher) observe(ctx context.Context, h *sourceHealth, kind, verb string, err error) {
	if err == nil {
		if verb == "watch" && !h.ok.Swap(true) {
			w.logger.Info("Kubernetes API reachable", "resource", kind)
		}
		return
	}
	if ctx.Err() != nil {
		return // shutting down, not an API failure
	}
	if verb == "list" {
		w.listErrors.Add(1)
	} else {
		w.watchErrors.Add(1)
	}
	w.markUnhealthy(h, kind, fmt.Errorf("%s %s: %w", verb, kind, err))
}

func (w *Watcher) markUnhealthy(h *sourceHealth, kind string, err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if h.ok.Swap(false) {
		w.logger.Warn("Kubernetes API request failed; serving last known state", "resource", kind, "err", err)
	} else {
		w.logger.Debug("Kubernetes API request failed", "resource", kind, "err", err)
	}
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
		}
	})
}

// Wait blocks until the informers Start started have returned, which they
// do once Start's ctx is cancelled: a shutdown that calls it leaves no
// watch or goroutine behind. Without Start it returns at once.
func (w *Watcher) Wait() { w.running.Wait() }

// WaitForSync blocks until the informers have completed their first list
// or ctx ends, and reports whether they synced.
func (w *Watcher) WaitForSync(ctx context.Context) bool {
	synced := []cache.InformerSynced{w.podInformer.HasSynced, w.nodeInformer.HasSynced}
	if w.sliceInformer != nil {
		synced = append(synced, w.sliceInformer.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), synced...)
}

// Snapshot reads the informer caches; it makes no API call and costs one
// pass over the pods bound to this node.
func (w *Watcher) Snapshot() Snapshot {
	s := Snapshot{
		Synced:      w.podInformer.HasSynced() && w.nodeInformer.HasSynced() && (w.sliceInformer == nil || w.sliceInformer.HasSynced()),
		Healthy:     w.pods.ok.Load() && w.nodes.ok.Load() && (w.sliceInformer == nil || w.slices.ok.Load()),
		ListErrors:  w.listErrors.Load(),
		WatchErrors: w.watchErrors.Load(),
		pods:        map[string]PodRef{},
		containers:  map[string]ContainerRef{},
	}
	w.mu.Lock()
	s.LastError = w.lastErr
	w.mu.Unlock()

	for _, obj := range w.podInformer.GetStore().List() {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			continue
		}
		s.Containers = append(s.Containers, PodContainerResources(pod, w.cfg.Matcher)...)
		s.pods[string(pod.UID)] = PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
		podContainerIDs(pod, s.containers)
	}
	slices.SortFunc(s.Containers, compareContainerResources)

	if obj, ok, err := w.nodeInformer.GetStore().GetByKey(w.cfg.NodeName); err == nil && ok {
		if node, ok := obj.(*corev1.Node); ok {
			s.Node = NodeGPUResources(node, w.cfg.Matcher)
		}
	}
	if w.sliceInformer != nil {
		var list []*resourcev1.ResourceSlice
		for _, obj := range w.sliceInformer.GetStore().List() {
			if sl, ok := obj.(*resourcev1.ResourceSlice); ok {
				list = append(list, sl)
			}
		}
		s.DRAEnabled = true
		s.draUUIDs, s.DRA = ResourceSliceDevices(list, w.cfg.DRADrivers)
	}
	return s
}
