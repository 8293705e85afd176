package scale

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/kubecluster"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
)

// BenchmarkAPIServerWatches puts a number on what the exporters' watches
// cost a real kube-apiserver (with etcd, internal/kubecluster), against what
// the kubelets' own watches of the same objects cost. Three phases of pod
// churn, the same each time (SCALE_CHURN_RATE pods a second created on the
// nodes in turn and deleted SCALE_POD_LIFE later, for SCALE_CHURN):
//
//   - churn: no watcher but the API server's own caches;
//   - kubelets: SCALE_WATCH_NODES kubelet-like clients, each watching the
//     pods bound to its node and its Node object with the field selectors
//     the kubelet uses, on a connection of its own;
//   - exporters: as many kube.Watchers as well (the exporter's watch code,
//     one node name each, a connection each).
//
// Each phase reports the API server's CPU (cores over the phase) and RSS at
// its end; then what one node's kubelet watches add over churn alone, and
// what its exporter's add over the kubelets': API server memory, CPU and
// the pod watch events sent (apiserver_watch_events_total), per node. The
// kubelet-like watchers also count the events they receive. One iteration
// is the whole measurement: run it with -benchtime=1x (make bench-scale;
// the defaults are small, for `make bench-once`).
func BenchmarkAPIServerWatches(b *testing.B) {
	nodes := envInt(b, "SCALE_WATCH_NODES", 10)
	rate := envInt(b, "SCALE_CHURN_RATE", 20)
	churnFor := envDuration(b, "SCALE_CHURN", 3*time.Second)
	life := envDuration(b, "SCALE_POD_LIFE", 3*time.Second)

	// No controller manager creates the namespace's default ServiceAccount.
	c := kubecluster.Start(b, "--disable-admission-plugins=ServiceAccount")
	admin := rest.CopyConfig(c.Admin)
	admin.QPS, admin.Burst = 1000, 2000
	cs := kubernetes.NewForConfigOrDie(admin)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "churn"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("gpu-node-%04d", i)
	}
	ch := churner{cs: cs, nodes: names, rate: rate, life: life}

	var received atomic.Int64
	type result struct{ cores, rss, events float64 }
	phase := func(name string) result {
		received.Store(0)
		before := readAPIServer(b, c, cs)
		start := time.Now()
		ch.run(ctx, b, churnFor)
		after := readAPIServer(b, c, cs)
		r := result{
			cores:  (after.cpu - before.cpu) / time.Since(start).Seconds(),
			rss:    after.rss,
			events: after.podEvents - before.podEvents,
		}
		b.ReportMetric(r.cores, name+"-apiserver-cores")
		b.ReportMetric(r.rss/(1<<20), name+"-apiserver-rss-MiB")
		b.ReportMetric(after.watchers, name+"-pod-watches")
		return r
	}

	b.ResetTimer()
	for range b.N {
		churn := phase("churn")
		for _, n := range names {
			kubeletWatch(ctx, b, admin, n, &received)
		}
		kubelets := phase("kubelets")
		kubeletReceived := received.Load()
		var wg sync.WaitGroup
		for _, n := range names {
			w := exporterWatch(ctx, b, admin, n)
			wg.Go(func() { w.Wait() })
		}
		exporters := phase("exporters")
		b.StopTimer()
		cancel()
		wg.Wait()

		// What each node's watches add: the kubelet's over churn alone,
		// the exporter's over the kubelets'.
		per := float64(nodes)
		b.ReportMetric((kubelets.rss-churn.rss)/per/1024, "kubelet-watch-KiB/node")
		b.ReportMetric((exporters.rss-kubelets.rss)/per/1024, "exporter-watch-KiB/node")
		b.ReportMetric((kubelets.cores-churn.cores)/per*1000, "kubelet-watch-millicores/node")
		b.ReportMetric((exporters.cores-kubelets.cores)/per*1000, "exporter-watch-millicores/node")
		b.ReportMetric((kubelets.events-churn.events)/per, "kubelet-pod-events/node")
		b.ReportMetric((exporters.events-kubelets.events)/per, "exporter-pod-events/node")
		b.ReportMetric(float64(kubeletReceived)/per, "kubelet-events-received/node")
		b.ReportMetric(float64(ch.n)/3/per, "pods-created/node/phase")
	}
}

// churner creates pods on the nodes in turn, rate a second, and deletes each
// life after its creation, as Jobs' pods come and go.
type churner struct {
	cs    kubernetes.Interface
	nodes []string
	rate  int
	life  time.Duration
	n     int
}

func (c *churner) run(ctx context.Context, tb testing.TB, d time.Duration) {
	tick := time.NewTicker(time.Second / time.Duration(c.rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var first atomic.Value
	fail := func(err error) {
		failed.Add(1)
		first.CompareAndSwap(nil, err)
	}
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		name := fmt.Sprintf("job-%06d", c.n)
		node := c.nodes[c.n%len(c.nodes)]
		c.n++
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "churn"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "main", Image: "registry.example/train:1",
			}}},
		}
		if _, err := c.cs.CoreV1().Pods("churn").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			fail(err)
			continue
		}
		wg.Go(func() {
			time.Sleep(c.life)
			zero := int64(0)
			if err := c.cs.CoreV1().Pods("churn").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		tb.Fatalf("%d pod creations or deletions failed, the first: %v", n, first.Load())
	}
}

// ownConnection gives a client a transport of its own (client-go shares one
// between clients of the same TLS settings), as each kubelet and exporter
// has its own connection.
func ownConnection(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Dial = (&net.Dialer{}).DialContext
	return c
}

// kubeletWatch watches what a kubelet watches of its node: the pods bound to
// it (spec.nodeName) and its Node (metadata.name), counting the events.
func kubeletWatch(ctx context.Context, tb testing.TB, cfg *rest.Config, node string, received *atomic.Int64) {
	cs := kubernetes.NewForConfigOrDie(ownConnection(cfg))
	count := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { received.Add(1) },
		UpdateFunc: func(any, any) { received.Add(1) },
		DeleteFunc: func(any) { received.Add(1) },
	}
	for _, w := range []struct {
		res, selector string
		obj           runtime.Object
	}{
		{"pods", fields.OneTermEqualSelector("spec.nodeName", node).String(), &corev1.Pod{}},
		{"nodes", fields.OneTermEqualSelector("metadata.name", node).String(), &corev1.Node{}},
	} {
		lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), w.res, "", func(o *metav1.ListOptions) { o.FieldSelector = w.selector })
		inf := cache.NewSharedIndexInformer(lw, w.obj, 0, cache.Indexers{})
		if _, err := inf.AddEventHandler(count); err != nil {
			tb.Fatal(err)
		}
		go inf.Run(ctx.Done())
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			tb.Fatalf("%s watch of %s never synced", w.res, node)
		}
	}
}

// exporterWatch starts the exporter's own watcher for node.
func exporterWatch(ctx context.Context, tb testing.TB, cfg *rest.Config, node string) *kube.Watcher {
	client, err := kube.NewClient(ownConnection(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	w := kube.NewWatcher(client, kube.Config{NodeName: node}, nil)
	w.Start(ctx)
	if !w.WaitForSync(ctx) {
		tb.Fatalf("exporter watcher of %s never synced", node)
	}
	return w
}

// apiserverState is what the API server has spent and sent so far.
type apiserverState struct {
	cpu, rss, podEvents, watchers float64
}

// readAPIServer reads the API server's CPU seconds and RSS from /proc and
// its pod watch events and watchers from its /metrics.
func readAPIServer(tb testing.TB, c *kubecluster.Cluster, cs kubernetes.Interface) apiserverState {
	tb.Helper()
	pid := c.APIServerPID()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command's closing parenthesis; utime and stime are
	// the 14th and 15th of the line.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var rssKiB float64
	for l := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		}
	}
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := parse(string(raw))
	if err != nil {
		tb.Fatal(err)
	}
	st := apiserverState{cpu: (utime + stime) / clockTicks, rss: rssKiB * 1024}
	for _, s := range sc.samples {
		pods := s.labels["resource"] == "pods" || s.labels["kind"] == "Pod"
		switch {
		case s.name == "apiserver_watch_events_total" && pods:
			st.podEvents += s.value
		case s.name == "apiserver_longrunning_requests" && s.labels["verb"] == "WATCH" && s.labels["resource"] == "pods":
			st.watchers += s.value
		}
	}
	return st
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
