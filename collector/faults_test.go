package collector

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

func faultGPU(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-0000000002%02d", i) }

// faultGPUs is go-nvml's DGX A100 mock cut to n GPUs, each 20 % busy with
// i+1 GiB in use, sampling on clk.
func faultGPUs(n int, clk *testkit.Clock) *server.Server {
	srv := dgxa100.New()
	srv.Devices = srv.Devices[:n]
	for i, d := range srv.Devices {
		i, dev := i, d.(*server.Device)
		dev.UUID = faultGPU(i)
		dev.GetSamplesFunc = func(_ gonvml.SamplingType, last uint64) (gonvml.ValueType, []gonvml.Sample, gonvml.Return) {
			ts := uint64(clk.Now().Add(-time.Second).UnixMicro())
			if ts <= last {
				return 0, nil, gonvml.ERROR_NOT_FOUND
			}
			return gonvml.VALUE_TYPE_UNSIGNED_INT, []gonvml.Sample{{TimeStamp: ts, SampleValue: nvml.EncodeUint32Sample(20)}}, gonvml.SUCCESS
		}
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: uint64(i+1) << 30}, gonvml.SUCCESS
		}
	}
	return srv
}

func faultPod(ns, name string, ids ...string) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Namespace: ns, Name: name, Containers: []*podresourcesv1.ContainerResources{{
		Name: "main", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}},
	}}}
}

// faultKubeletClient serves src on a fresh socket and returns a real Client on it.
func faultKubeletClient(t *testing.T, src fakekubelet.Source) (*podresources.Client, string) {
	t.Helper()
	_, sock := testkit.ServeKubelet(t, src)
	c, err := podresources.New(podresources.Config{Socket: sock, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, sock
}

// faultSeries gathers c once and returns every sample as "name{labels}" -> value,
// labels sorted by name.
func faultSeries(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var lv []string
			for _, l := range m.GetLabel() {
				lv = append(lv, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(lv)
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			out[mf.GetName()+"{"+strings.Join(lv, ",")+"}"] = v
		}
	}
	return out
}

// faultCount returns how many series of family name s holds.
func faultCount(s map[string]float64, name string) int {
	n := 0
	for k := range s {
		if strings.HasPrefix(k, name+"{") {
			n++
		}
	}
	return n
}

// TestKubeletDownNodeMetricsFlow takes a real pod-resources server away
// under a running collector: node metrics keep flowing from NVML with
// up{source="kubelet"} 0, and container metrics come back on their own
// within seconds of the kubelet returning on the same socket.
func TestKubeletDownNodeMetricsFlow(t *testing.T) {
	clk := testkit.NewClock(time.Now())
	sampler := nvml.NewSampler(faultGPUs(4, clk), nvml.Config{Window: time.Minute, Now: clk.Now})
	sampler.Poll()
	src := &testkit.Kubelet{
		ListReply:  &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{faultPod("ml", "a", faultGPU(0)), faultPod("ml", "b", faultGPU(1), faultGPU(2))}},
		AllocReply: &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{faultGPU(0), faultGPU(1), faultGPU(2), faultGPU(3)}}}},
	}
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	srv := fakekubelet.NewServer(src)
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	client, err := podresources.New(podresources.Config{Socket: sock, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := New(Config{NodeName: "n", NVMLStaleAfter: time.Minute, Now: clk.Now}, sampler, client, nil)

	up := faultSeries(t, c)
	if up[`kube_gpu_exporter_up{source=kubelet}`] != 1 || faultCount(up, "containerGpumemoryUsedBytes") != 3 || faultCount(up, "nodeGpumemoryUsedBytes") != 4 {
		t.Fatalf("healthy node: %v", up)
	}

	srv.Stop()
	var lastErr string
	for i := 0; i < 3; i++ {
		down := faultSeries(t, c)
		if down[`kube_gpu_exporter_up{source=kubelet}`] != 0 || down[`kube_gpu_exporter_up{source=nvml}`] != 1 {
			t.Fatalf("kubelet down, scrape %d: up = kubelet %v nvml %v", i, down[`kube_gpu_exporter_up{source=kubelet}`], down[`kube_gpu_exporter_up{source=nvml}`])
		}
		for k := 0; k < 4; k++ {
			key := fmt.Sprintf("nodeGpumemoryUsedBytes{gpu_id=%s,gpu_model=Mock NVIDIA A100-SXM4-40GB,gpu_vendor=nvidia,node=n}", faultGPU(k))
			if down[key] != float64(uint64(k+1)<<30) {
				t.Fatalf("kubelet down: %s = %v, want the NVML reading", key, down[key])
			}
		}
		if n := faultCount(down, "nodeGpuDutyCycle"); n != 4 {
			t.Fatalf("kubelet down: %d nodeGpuDutyCycle series, want 4", n)
		}
		if n := faultCount(down, "containerGpuDutyCycle") + faultCount(down, "containerGpumemoryUsedBytes"); n != 0 {
			t.Fatalf("kubelet down: %d container usage series, want none", n)
		}
		if down[`kube_gpu_exporter_errors_total{reason=unavailable,source=kubelet}`] < 1 {
			t.Fatalf("kubelet down: no unavailable error counted: %v", down)
		}
		// The status page's line per source says the same, with why.
		_, h := c.Gather(context.Background())
		src := c.Sources(h)
		if len(src) != 2 || src[0].Name != "nvml" || !src[0].Up || src[0].Err != "" ||
			src[1].Name != "kubelet" || src[1].Up || src[1].Err == "" || src[1].Errors["unavailable"] < 1 ||
			src[1].LastErr != src[1].Err || src[1].LastErrAt.IsZero() || src[0].LastErr != "" {
			t.Fatalf("kubelet down: sources %+v", src)
		}
		lastErr = src[1].LastErr
		clk.Advance(2 * time.Second)
		sampler.Poll()
	}

	back := fakekubelet.NewServer(src)
	if err := back.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer back.Stop()
	begin := time.Now()
	for {
		s := faultSeries(t, c)
		if s[`kube_gpu_exporter_up{source=kubelet}`] == 1 && faultCount(s, "containerGpumemoryUsedBytes") == 3 {
			t.Logf("container metrics back %v after the kubelet returned", time.Since(begin).Round(time.Millisecond))
			// Up again, with the outage's error still told.
			_, h := c.Gather(context.Background())
			if src := c.Sources(h); !src[1].Up || src[1].Err != "" || src[1].LastErr != lastErr {
				t.Errorf("kubelet back: sources %+v, want its last error %q kept", src, lastErr)
			}
			return
		}
		if time.Since(begin) > 5*time.Second {
			t.Fatalf("container metrics not back within 5s of the kubelet returning: %v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnknownDeviceIDsCounted: IDs the kubelet hands out that name no NVML
// device (a GPU the driver lost, a foreign plugin's IDs, junk) are counted in
// kube_gpu_exporter_unmatched_devices, each once however many containers
// hold it; the containers with known devices are unaffected.
func TestUnknownDeviceIDsCounted(t *testing.T) {
	clk := testkit.NewClock(time.Now())
	sampler := nvml.NewSampler(faultGPUs(2, clk), nvml.Config{Window: time.Minute, Now: clk.Now})
	sampler.Poll()
	const vanished = "GPU-deadbeef-0000-4000-8000-000000000000"
	src := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		faultPod("ml", "ok", faultGPU(0)),
		faultPod("ml", "mixed", faultGPU(1), vanished),
		faultPod("ml", "also-vanished", vanished+"::3", vanished),
		faultPod("ml", "junk", "not-a-device", "nvidia99"),
		faultPod("", "nameless", "GPU-11111111-0000-4000-8000-000000000000"), // dropped before the join, not unmatched
	}}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	client, _ := faultKubeletClient(t, src)
	c := New(Config{NodeName: "n"}, sampler, client, nil)
	s := faultSeries(t, c)
	// vanished (twice, and as a replica), vanished::3, not-a-device, nvidia99.
	if got := s["kube_gpu_exporter_unmatched_devices{}"]; got != 4 {
		t.Fatalf("unmatched devices = %v, want 4", got)
	}
	if s["kube_gpu_exporter_errors_total{reason=empty_name,source=kubelet}"] != 1 {
		t.Fatalf("nameless pod not counted: %v", s)
	}
	for _, p := range []string{"ok", "mixed"} {
		key := fmt.Sprintf("containerGpumemoryUsedBytes{container=main,gpu_id=%s,gpu_model=Mock NVIDIA A100-SXM4-40GB,gpu_vendor=nvidia,namespace=ml,node=n,pod=%s}", map[string]string{"ok": faultGPU(0), "mixed": faultGPU(1)}[p], p)
		if _, ok := s[key]; !ok {
			t.Errorf("pod %s lost its known device's series", p)
		}
	}
	if n := faultCount(s, "containerGpumemoryUsedBytes"); n != 2 {
		t.Errorf("%d container memory series, want 2", n)
	}

	// The kubelet drops the unknown IDs: the gauge follows.
	src.Set(func(k *testkit.Kubelet) {
		k.ListReply = &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{faultPod("ml", "ok", faultGPU(0))}}
	})
	if got := faultSeries(t, c)["kube_gpu_exporter_unmatched_devices{}"]; got != 0 {
		t.Fatalf("unmatched devices = %v after the kubelet dropped them, want 0", got)
	}
}

// TestHungNVMLDoesNotHangScrapes wedges an NVML call inside the background
// sampler. Scrapes, through the collector and over HTTP, keep answering at
// once from the last snapshot; once that snapshot is older than
// NVMLStaleAfter, up{source="nvml"} is 0 and the device series are withheld
// rather than frozen; when the call returns, the numbers come back.
func TestHungNVMLDoesNotHangScrapes(t *testing.T) {
	clk := testkit.NewClock(time.Now())
	gpus := faultGPUs(3, clk)
	entered, release := make(chan struct{}), make(chan struct{})
	var hang atomic.Bool
	dev := gpus.Devices[1].(*server.Device)
	healthy := dev.GetMemoryInfo_v2Func
	dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		if hang.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return healthy()
	}
	sampler := nvml.NewSampler(gpus, nvml.Config{Window: time.Minute, Interval: 10 * time.Millisecond, Now: clk.Now})
	sampler.Poll()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sampler.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	const staleAfter = 30 * time.Second
	src := &testkit.Kubelet{ListReply: &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{faultPod("ml", "a", faultGPU(1))}}, AllocReply: &podresourcesv1.AllocatableResourcesResponse{}}
	client, _ := faultKubeletClient(t, src)
	c := New(Config{NodeName: "n", NVMLStaleAfter: staleAfter, Now: clk.Now}, sampler, client, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	web := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer web.Close()
	httpScrape := func() string {
		t.Helper()
		hc := &http.Client{Timeout: 5 * time.Second}
		begin := time.Now()
		resp, err := hc.Get(web.URL)
		if err != nil {
			t.Fatalf("HTTP scrape during a hung NVML call: %v", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > 2*time.Second {
			t.Fatalf("HTTP scrape took %v during a hung NVML call", d)
		}
		return string(b)
	}

	hang.Store(true)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the sampler never reached the hanging call")
	}
	polls := sampler.Polls()

	// Hung, but not yet stale: the last snapshot is served.
	clk.Advance(staleAfter - time.Second)
	body := httpScrape()
	for _, want := range []string{`kube_gpu_exporter_up{source="nvml"} 1`, `kube_gpu_exporter_up{source="kubelet"} 1`, `nodeGpuDutyCycle{gpu_id="` + faultGPU(2), `containerGpumemoryUsedBytes{container="main",gpu_id="` + faultGPU(1)} {
		if !strings.Contains(body, want) {
			t.Fatalf("scrape before the staleness bound lacks %s:\n%s", want, body)
		}
	}

	// Stale: up 0, no device readings, the kubelet side unaffected.
	clk.Advance(2 * time.Second)
	for i := 0; i < 3; i++ {
		begin := time.Now()
		v, h := c.Gather(context.Background())
		if d := time.Since(begin); d > 2*time.Second {
			t.Fatalf("Gather took %v during a hung NVML call", d)
		}
		if h.NVMLUp || !h.KubeletUp || len(v.Devices) != 0 || len(v.Usage) != 0 {
			t.Fatalf("stale NVML: health %+v, %d devices, %d usage", h, len(v.Devices), len(v.Usage))
		}
	}
	body = httpScrape()
	if !strings.Contains(body, `kube_gpu_exporter_up{source="nvml"} 0`) || strings.Contains(body, "nodeGpuDutyCycle{") || strings.Contains(body, "nodeGpumemoryUsedBytes{") || strings.Contains(body, "containerGpuDutyCycle{") {
		t.Fatalf("stale NVML still served as up or with device series:\n%s", body)
	}
	if !strings.Contains(body, `kube_gpu_exporter_up{source="kubelet"} 1`) || !strings.Contains(body, `containerGpuRequests{container="main"`) {
		t.Fatalf("kubelet-side series lost while NVML hung:\n%s", body)
	}
	if sampler.Polls() != polls {
		t.Fatal("another poll started while one hung")
	}

	// The call returns: the next poll finishes at the current time.
	close(release)
	released = true
	deadline := time.Now().Add(5 * time.Second)
	for {
		body = httpScrape()
		if strings.Contains(body, `kube_gpu_exporter_up{source="nvml"} 1`) && strings.Count(body, "\nnodeGpuDutyCycle{") == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NVML not back within 5s of the call returning:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
