package kube

import (
	"context"
	"errors"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube/kubetest"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

const testNode = "node-a"

// request is one list or watch call seen by the fake API server.
type request struct {
	verb, resource, fieldSelector string
}

// fakeAPI wraps client-go's fake clientset with reactors that record every
// list and watch (the fake ignores field selectors, so the test checks them
// itself), can make the API "unreachable", and can break open watches.
type fakeAPI struct {
	client *fake.Clientset

	mu       sync.Mutex
	down     bool  // list and watch fail
	downErr  error // what they fail with; errUnreachable if nil
	noWatch  bool  // watch is forbidden, list works
	requests []request
	opened   map[string]int // successful watches per resource
	watches  []*breakableWatch
}

var errUnreachable = errors.New("dial tcp 10.96.0.1:443: i/o timeout")

func newFakeAPI(objs ...runtime.Object) *fakeAPI {
	api := &fakeAPI{client: fake.NewClientset(objs...), opened: map[string]int{}}
	api.client.PrependReactor("list", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		opts := a.(interface{ GetListOptions() metav1.ListOptions }).GetListOptions()
		api.mu.Lock()
		defer api.mu.Unlock()
		api.requests = append(api.requests, request{"list", a.GetResource().Resource, opts.FieldSelector})
		if api.down {
			return true, nil, api.failure()
		}
		return false, nil, nil // fall through to the object tracker
	})
	api.client.PrependWatchReactor("*", func(a clienttesting.Action) (bool, watch.Interface, error) {
		opts := a.(interface{ GetListOptions() metav1.ListOptions }).GetListOptions()
		api.mu.Lock()
		defer api.mu.Unlock()
		api.requests = append(api.requests, request{"watch", a.GetResource().Resource, opts.FieldSelector})
		if api.down {
			return true, nil, api.failure()
		}
		if api.noWatch {
			return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", errors.New("RBAC: watch not allowed"))
		}
		inner, err := api.client.Tracker().Watch(a.GetResource(), a.GetNamespace(), opts)
		if err != nil {
			return true, nil, err
		}
		bw := newBreakableWatch(inner)
		api.watches = append(api.watches, bw)
		api.opened[a.GetResource().Resource]++
		return true, bw, nil
	})
	return api
}

func (api *fakeAPI) failure() error {
	if api.downErr != nil {
		return api.downErr
	}
	return errUnreachable
}

func (api *fakeAPI) openedWatches(resource string) int {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.opened[resource]
}

// outage makes every further request fail and ends the open watches with
// a 503 error event, as a restarting API server would.
func (api *fakeAPI) outage() {
	api.mu.Lock()
	api.down = true
	ws := api.watches
	api.watches = nil
	api.mu.Unlock()
	for _, w := range ws {
		w.breakWith(watch.Event{Type: watch.Error, Object: &metav1.Status{
			Status: metav1.StatusFailure, Code: 503, Reason: metav1.StatusReasonServiceUnavailable, Message: "apiserver shutting down",
		}})
	}
}

func (api *fakeAPI) recover() {
	api.mu.Lock()
	api.down = false
	api.mu.Unlock()
}

// checkSelectors asserts that only pods and nodes were ever listed or
// watched, always with this node's field selector, and that both verbs were
// used for both resources.
func (api *fakeAPI) checkSelectors(t *testing.T) {
	t.Helper()
	want := map[string]string{"pods": "spec.nodeName=" + testNode, "nodes": "metadata.name=" + testNode}
	seen := map[request]bool{}
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, r := range api.requests {
		sel, ok := want[r.resource]
		if !ok {
			t.Errorf("unexpected %s of %s", r.verb, r.resource)
			continue
		}
		if r.fieldSelector != sel {
			t.Errorf("%s %s with field selector %q, want %q", r.verb, r.resource, r.fieldSelector, sel)
		}
		seen[request{r.verb, r.resource, ""}] = true
	}
	for _, res := range []string{"pods", "nodes"} {
		for _, verb := range []string{"list", "watch"} {
			if !seen[request{verb, res, ""}] {
				t.Errorf("no %s of %s recorded", verb, res)
			}
		}
	}
}

// breakableWatch forwards a tracker watch and can end it with an error
// event, which the tracker's own watches cannot do.
type breakableWatch struct {
	inner  watch.Interface
	out    chan watch.Event
	breakc chan watch.Event
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newBreakableWatch(inner watch.Interface) *breakableWatch {
	w := &breakableWatch{
		inner:  inner,
		out:    make(chan watch.Event),
		breakc: make(chan watch.Event),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go w.run()
	return w
}

func (w *breakableWatch) run() {
	defer close(w.done)
	defer close(w.out)
	defer w.inner.Stop()
	for {
		select {
		case ev, ok := <-w.inner.ResultChan():
			if !ok {
				return
			}
			select {
			case w.out <- ev:
			case <-w.stop:
				return
			}
		case ev := <-w.breakc:
			select {
			case w.out <- ev:
			case <-w.stop:
			}
			return
		case <-w.stop:
			return
		}
	}
}

func (w *breakableWatch) breakWith(ev watch.Event) {
	select {
	case w.breakc <- ev:
	case <-w.done:
	}
}

func (w *breakableWatch) Stop()                          { w.once.Do(func() { close(w.stop) }) }
func (w *breakableWatch) ResultChan() <-chan watch.Event { return w.out }

// startWatcher runs a Watcher against api until the test ends and waits
// for its caches to sync and both watches to be open.
func startWatcher(t *testing.T, api *fakeAPI) *Watcher {
	t.Helper()
	logs := &testkit.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode}, logger)
	t.Cleanup(func() {
		cancel()
		w.Wait()
		if t.Failed() {
			t.Logf("watcher logs:\n%s", logs.String())
		}
	})
	w.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 10*time.Second)
	defer syncCancel()
	if !w.WaitForSync(syncCtx) {
		t.Fatal("informers did not sync")
	}
	testkit.Eventually(t, 10*time.Second, "watches open", func() bool {
		return api.openedWatches("pods") > 0 && api.openedWatches("nodes") > 0
	})
	return w
}

func gpuNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"a": "b"}},
		Status: corev1.NodeStatus{
			Capacity:    rl("nvidia.com/gpu", "8", "nvidia.com/mig-1g.10gb", "7", "cpu", "64"),
			Allocatable: rl("nvidia.com/gpu", "7", "nvidia.com/mig-1g.10gb", "7", "cpu", "63"),
		},
	}
}

func gpuPod(ns, name string, gpus string) *corev1.Pod {
	p := testPod(ns, name, corev1.PodRunning, nil, []corev1.Container{ctr("main", nil, rl("nvidia.com/gpu", gpus))})
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://id-" + name}}
	return p
}

func hasPod(s Snapshot, ns, name string) bool {
	for _, c := range s.Containers {
		if c.Namespace == ns && c.Pod == name {
			return true
		}
	}
	return false
}

func TestWatcherSnapshot(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := ctr("proxy", nil, rl("amd.com/gpu", "1"))
	sidecar.RestartPolicy = &always
	multi := testPod("ml", "multi", corev1.PodRunning,
		[]corev1.Container{ctr("init", nil, rl("nvidia.com/gpu", "1")), sidecar},
		[]corev1.Container{ctr("main", rl("nvidia.com/mig-1g.10gb", "2"), rl("nvidia.com/mig-1g.10gb", "2", "nvidia.com/gpu", "1"))})
	multi.Status.InitContainerStatuses = []corev1.ContainerStatus{
		{Name: "init", ContainerID: "containerd://init-id"}, {Name: "proxy", ContainerID: "cri-o://proxy-id"},
	}
	multi.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://main-id"}}
	multi.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: "debug", ContainerID: "containerd://debug-id"}}
	done := gpuPod("batch", "done", "1")
	done.Status.Phase = corev1.PodSucceeded

	trainer := gpuPod("ml", "trainer", "4")
	trainer.Labels = map[string]string{"jobset.sigs.k8s.io/jobset-name": "llama", "team": "a"}

	api := newFakeAPI(gpuNode(testNode), multi, done, trainer)
	w := startWatcher(t, api)
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return w.Snapshot().Healthy })
	s := w.Snapshot()
	if !s.Synced || s.LastError != nil {
		t.Fatalf("Synced=%v Healthy=%v LastError=%v", s.Synced, s.Healthy, s.LastError)
	}

	e := func(pod, c, res, vendor string, v float64) ContainerResources {
		return ContainerResources{Namespace: "ml", Pod: pod, PodUID: "uid-" + pod, Container: c, Resource: res, Vendor: vendor, Request: v, Limit: v}
	}
	want := []ContainerResources{
		e("multi", "init", "nvidia.com/gpu", "nvidia", 1),
		e("multi", "main", "nvidia.com/gpu", "nvidia", 1),
		e("multi", "main", "nvidia.com/mig-1g.10gb", "nvidia", 2),
		e("multi", "proxy", "amd.com/gpu", "amd", 1),
		e("trainer", "main", "nvidia.com/gpu", "nvidia", 4),
	}
	if !reflect.DeepEqual(s.Containers, want) {
		t.Errorf("Containers =\n%+v\nwant\n%+v", s.Containers, want)
	}
	wantNode := NodeResources{Found: true, Name: testNode,
		Capacity: []ResourceQuantity{
			{Resource: "nvidia.com/gpu", Vendor: "nvidia", Value: 8}, {Resource: "nvidia.com/mig-1g.10gb", Vendor: "nvidia", Value: 7},
		},
		Allocatable: []ResourceQuantity{
			{Resource: "nvidia.com/gpu", Vendor: "nvidia", Value: 7}, {Resource: "nvidia.com/mig-1g.10gb", Vendor: "nvidia", Value: 7},
		},
	}
	if !reflect.DeepEqual(s.Node, wantNode) {
		t.Errorf("Node =\n%+v\nwant\n%+v", s.Node, wantNode)
	}

	// Container-ID lookups cover init, sidecar, regular and ephemeral
	// containers, with or without the runtime scheme.
	for id, want := range map[string]string{
		"init-id": "init", "proxy-id": "proxy", "containerd://main-id": "main", "debug-id": "debug",
	} {
		got, ok := s.ContainerByID(id)
		if !ok || got != (ContainerRef{Namespace: "ml", Pod: "multi", PodUID: "uid-multi", Container: want}) {
			t.Errorf("ContainerByID(%q) = %+v, %v; want container %q", id, got, ok, want)
		}
	}
	if _, ok := s.ContainerByID("unknown"); ok {
		t.Error("ContainerByID(unknown) found something")
	}
	// A terminal pod has no requests but is still known by UID and ID.
	if p, ok := s.PodByUID("uid-done"); !ok || p != (PodRef{Namespace: "batch", Name: "done", UID: "uid-done"}) {
		t.Errorf("PodByUID(uid-done) = %+v, %v", p, ok)
	}
	if c, ok := s.ContainerByID("id-done"); !ok || c.Pod != "done" {
		t.Errorf("ContainerByID(id-done) = %+v, %v", c, ok)
	}

	// Workloads are named from the cached, slimmed pods.
	for pod, want := range map[string]Workload{"ml/trainer": {"JobSet", "llama"}, "ml/multi": {"Pod", "multi"}, "batch/done": {"Pod", "done"}} {
		ns, name, _ := strings.Cut(pod, "/")
		if got, ok := s.Specs().Workloads.PodWorkload(ns, name); !ok || got != want {
			t.Errorf("PodWorkload(%s) = %+v, %v; want %+v", pod, got, ok, want)
		}
	}
	if got, ok := s.PodWorkload("ml", "gone"); ok {
		t.Errorf("PodWorkload of an unknown pod = %+v", got)
	}

	// The cache holds slimmed objects.
	for _, obj := range w.nodeInformer.GetStore().List() {
		if n := obj.(*corev1.Node); n.Annotations != nil || len(n.Status.Capacity) != 2 {
			t.Errorf("cached node not slimmed: %+v", n)
		}
	}
	api.checkSelectors(t)
}

func TestWatcherFollowsPods(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode))
	w := startWatcher(t, api)
	ctx := context.Background()
	pods := api.client.CoreV1().Pods("inference")

	if s := w.Snapshot(); len(s.Containers) != 0 {
		t.Fatalf("unexpected containers: %+v", s.Containers)
	}
	if _, err := pods.Create(ctx, gpuPod("inference", "llm-0", "1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "llm-0 appears", func() bool { return hasPod(w.Snapshot(), "inference", "llm-0") })
	if c, ok := w.Snapshot().ContainerByID("id-llm-0"); !ok || c.Pod != "llm-0" {
		t.Errorf("ContainerByID(id-llm-0) = %+v, %v", c, ok)
	}

	// The pod finishes: its requests go, its identity stays while it exists.
	p, err := pods.Get(ctx, "llm-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodFailed
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "failed llm-0 drops out", func() bool { return !hasPod(w.Snapshot(), "inference", "llm-0") })
	if _, ok := w.Snapshot().PodByUID("uid-llm-0"); !ok {
		t.Error("failed pod no longer known by UID")
	}

	if err := pods.Delete(ctx, "llm-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "llm-0 forgotten", func() bool {
		_, ok := w.Snapshot().PodByUID("uid-llm-0")
		return !ok
	})

	// Node allocatable changes (a GPU marked unhealthy by the device plugin).
	n := gpuNode(testNode)
	n.Status.Allocatable = rl("nvidia.com/gpu", "6")
	if _, err := api.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "allocatable update", func() bool {
		a := w.Snapshot().Node.Allocatable
		return len(a) == 1 && a[0].Value == 6
	})
	api.checkSelectors(t)
}

func TestWatcherNodeWithoutGPUsAndMissingNode(t *testing.T) {
	plain := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: testNode},
		Status:     corev1.NodeStatus{Capacity: rl("cpu", "4"), Allocatable: rl("cpu", "4")},
	}
	api := newFakeAPI(plain, gpuNode("other-node"))
	w := startWatcher(t, api)
	if got := w.Snapshot().Node; !reflect.DeepEqual(got, NodeResources{Found: true, Name: testNode}) {
		t.Errorf("node without GPUs: %+v", got)
	}

	missing := newFakeAPI(gpuNode("other-node"))
	w = startWatcher(t, missing)
	if got := w.Snapshot().Node; got.Found {
		t.Errorf("node %s does not exist but was found: %+v", testNode, got)
	}
	api.checkSelectors(t)
	missing.checkSelectors(t)
}

func TestWatcherAPIOutage(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	w := startWatcher(t, api)
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return w.Snapshot().Healthy })
	before := w.Snapshot()
	if len(before.Containers) != 1 || !before.Node.Found {
		t.Fatalf("unexpected initial snapshot: %+v", before)
	}

	api.outage()
	testkit.Eventually(t, 30*time.Second, "unhealthy during outage", func() bool { return !w.Snapshot().Healthy })
	// The watches end with the server's 503 first; the retries then fail
	// to connect.
	testkit.Eventually(t, 30*time.Second, "connection error recorded", func() bool {
		return errors.Is(w.Snapshot().LastError, errUnreachable)
	})
	during := w.Snapshot()
	if !reflect.DeepEqual(during.Containers, before.Containers) || !reflect.DeepEqual(during.Node, before.Node) {
		t.Errorf("last known state not served during outage:\n%+v\nwant\n%+v", during, before)
	}
	if during.LastError == nil || !errors.Is(during.LastError, errUnreachable) {
		t.Errorf("LastError = %v, want the API error", during.LastError)
	}
	if during.ListErrors+during.WatchErrors == 0 {
		t.Error("no list/watch errors counted")
	}
	if _, ok := during.ContainerByID("id-trainer"); !ok {
		t.Error("container lookup lost during outage")
	}

	watchesBefore := api.openedWatches("pods")
	api.recover()
	// The reflector backs off between retries (under ten seconds after
	// a few failures), so allow generously.
	testkit.Eventually(t, 45*time.Second, "healthy again", func() bool { return w.Snapshot().Healthy })
	testkit.Eventually(t, 45*time.Second, "pod watch reopened", func() bool { return api.openedWatches("pods") > watchesBefore })

	// The informers follow changes again after recovery.
	if _, err := api.client.CoreV1().Pods("ml").Create(context.Background(), gpuPod("ml", "trainer-2", "2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "pod created after recovery", func() bool { return hasPod(w.Snapshot(), "ml", "trainer-2") })
	api.checkSelectors(t)
}

func TestWatcherUnhealthyUntilFirstList(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode))
	api.mu.Lock()
	api.down = true
	api.mu.Unlock()
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode}, nil)
	if s := w.Snapshot(); s.Healthy || s.Synced {
		t.Fatalf("not started yet: Healthy=%v Synced=%v", s.Healthy, s.Synced)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	testkit.Eventually(t, 10*time.Second, "list error counted", func() bool { return w.Snapshot().ListErrors > 0 })
	if s := w.Snapshot(); s.Healthy || s.Synced || s.Node.Found {
		t.Errorf("API down from the start: Healthy=%v Synced=%v Node=%+v", s.Healthy, s.Synced, s.Node)
	}
	api.recover()
	testkit.Eventually(t, 45*time.Second, "synced and healthy", func() bool {
		s := w.Snapshot()
		return s.Synced && s.Healthy && s.Node.Found
	})
}

func TestWatcherListWithoutWatchIsUnhealthy(t *testing.T) {
	api := newFakeAPI(gpuNode(testNode), gpuPod("ml", "trainer", "4"))
	api.noWatch = true
	w := NewWatcher(kubetest.FromClientset(api.client), Config{NodeName: testNode}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	// Both informers list, fail to watch, back off and list again.
	testkit.Eventually(t, 10*time.Second, "synced with watch errors", func() bool {
		s := w.Snapshot()
		return s.Synced && s.WatchErrors >= 2
	})
	s := w.Snapshot()
	if s.Healthy {
		t.Error("Healthy although no watch could be opened")
	}
	if len(s.Containers) != 1 || !s.Node.Found {
		t.Errorf("listed state not served: %+v", s)
	}
	if !apierrors.IsForbidden(s.LastError) {
		t.Errorf("LastError = %v, want forbidden", s.LastError)
	}
}
