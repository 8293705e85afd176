package node

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// gpuResources are the resources the test plugins advertise.
var gpuResources = []string{"nvidia.com/gpu", "nvidia.com/gpu.shared"}

// testNamespace holds the test's GPU pods.
const testNamespace = "e2e"

// kubeletReplies asks the kubelet's pod-resources socket directly, as the
// ground truth each case checks the exporter against.
func (n *kubeNode) kubeletReplies() (*podresourcesv1.ListPodResourcesResponse, *podresourcesv1.AllocatableResourcesResponse, error) {
	conn, err := grpc.NewClient("unix://"+n.podResourcesSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	api := podresourcesv1.NewPodResourcesListerClient(conn)
	list, err := api.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet List: %w", err)
	}
	alloc, err := api.GetAllocatableResources(ctx, &podresourcesv1.AllocatableResourcesRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet GetAllocatableResources: %w", err)
	}
	return list, alloc, nil
}

// kubeletList is List's reply, or the end of the test.
func (n *kubeNode) kubeletList(t *testing.T) *podresourcesv1.ListPodResourcesResponse {
	t.Helper()
	list, _, err := n.kubeletReplies()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// holders reduces a List reply to "namespace/pod/container gpu-uuid"
// pairs of the test namespace: the GPUs each container holds, a
// time-slicing replica counted as its GPU.
func holders(list *podresourcesv1.ListPodResourcesResponse) []string {
	set := map[string]bool{}
	for _, p := range list.GetPodResources() {
		if p.GetNamespace() != testNamespace {
			continue
		}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if !slices.Contains(gpuResources, d.GetResourceName()) {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					uuid, _, _ := strings.Cut(id, "::")
					set[fmt.Sprintf("%s/%s/%s %s", p.GetNamespace(), p.GetName(), c.GetName(), uuid)] = true
				}
			}
			// Claimed devices, by the name the test's DRA driver gives
			// GPU N in its ResourceSlice: gpu-N.
			for _, dr := range c.GetDynamicResources() {
				for _, cr := range dr.GetClaimResources() {
					var gpu int
					if _, err := fmt.Sscanf(cr.GetDeviceName(), "gpu-%d", &gpu); err == nil && cr.GetDriverName() == draDriverName {
						set[fmt.Sprintf("%s/%s/%s %s", p.GetNamespace(), p.GetName(), c.GetName(), simulate.UUID(gpu))] = true
					}
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// scrapedHolders is the same from the exporter's containerGpuDutyCycle.
func scrapedHolders(s tooltest.Series) []string {
	var out []string
	for k := range s {
		if !strings.HasPrefix(k, "containerGpuDutyCycle{") {
			continue
		}
		ns, pod, ctr, gpu := label(k, "namespace"), label(k, "pod"), label(k, "container"), label(k, "gpu_id")
		if ns == testNamespace {
			out = append(out, fmt.Sprintf("%s/%s/%s %s", ns, pod, ctr, gpu))
		}
	}
	slices.Sort(out)
	return out
}

// label returns a label's value from a Series key.
func label(key, name string) string {
	_, rest, ok := strings.Cut(key, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// waitAgree waits until the exporter serves exactly the holders the
// kubelet lists, and that these are want.
func (n *kubeNode) waitAgree(t *testing.T, addr string, want []string, timeout time.Duration) {
	t.Helper()
	slices.Sort(want)
	testkit.EventuallyNil(t, timeout, "exporter agrees with the kubelet", func() error {
		list, _, err := n.kubeletReplies()
		if err != nil {
			return err
		}
		s, err := tooltest.Scrape(addr)
		if err != nil {
			return err
		}
		truth, got := holders(list), scrapedHolders(s)
		if !slices.Equal(truth, want) || !slices.Equal(got, truth) {
			return fmt.Errorf("\nkubelet  %q\nexporter %q\nwant     %q", truth, got, want)
		}
		return nil
	})
}

// scrapeWatch scrapes the exporter every 100 ms until stopped and records
// every scrape whose holders differ from want, and every container
// GPU-seconds or energy counter that went back or disappeared.
type scrapeWatch struct {
	done    chan struct{}
	stopped chan struct{}
	scrapes int
	faults  []string
}

func watchScrapes(t *testing.T, addr string, want []string) *scrapeWatch {
	slices.Sort(want)
	w := &scrapeWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		last := map[string]float64{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			s, err := tooltest.Scrape(addr)
			w.scrapes++
			if err != nil {
				w.faults = append(w.faults, err.Error())
				continue
			}
			if got := scrapedHolders(s); !slices.Equal(got, want) {
				w.faults = append(w.faults, fmt.Sprintf("holders %q", got))
			}
			for k, v := range last {
				if nv, ok := s[k]; !ok || nv < v {
					w.faults = append(w.faults, fmt.Sprintf("%s went from %v to %v (present %v)", k, v, nv, ok))
				}
			}
			for k, v := range s {
				billed := strings.HasPrefix(k, "kube_gpu_container_allocated_gpu_seconds_total{") || strings.HasPrefix(k, "kube_gpu_container_energy_joules_total{")
				if billed && label(k, "namespace") == testNamespace {
					last[k] = v
				}
			}
		}
	}()
	return w
}

// stop ends the watch and fails the test on what it saw.
func (w *scrapeWatch) stop(t *testing.T) {
	t.Helper()
	close(w.done)
	<-w.stopped
	if len(w.faults) > 0 {
		t.Errorf("%d of %d scrapes wrong; first: %s", len(w.faults), w.scrapes, strings.Join(w.faults[:min(5, len(w.faults))], "\n"))
		return
	}
	t.Logf("%d scrapes, all as before", w.scrapes)
}
