package collector_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/collector"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/benchnode"
)

// TestSourceCallsIndependentOfScrapers shows that what a scrape costs the
// node's sources does not grow with the number of scrapers: NVML is read
// only by the sampler's own polls and the kubelet only by the accounting
// step, once per poll, never by a scrape, even with the client's cache off.
func TestSourceCallsIndependentOfScrapers(t *testing.T) {
	c := benchnode.Cases()[0]
	for _, scrapers := range []int{1, 50} {
		dir, err := os.MkdirTemp("", "kge-calls-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		n, err := benchnode.Start(c, dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		coll := collector.New(collector.Config{NodeName: "gpu-node-01", NVMLStaleAfter: time.Hour}, n.Sampler, n.Kubelet, nil)
		polls, nvmlCalls := n.Sampler.Polls(), n.NVMLCalls()
		if nvmlCalls == 0 {
			t.Fatal("the sampler's poll read nothing from the NVML mock")
		}
		coll.Account(context.Background())
		coll.Account(context.Background()) // the same poll again: nothing to do
		if got := n.Kubelet.Calls(); got != 1 {
			t.Fatalf("two accounting steps on one poll made %d kubelet calls, want 1", got)
		}
		concurrentScrapes(t, coll, scrapers)
		concurrentScrapes(t, coll, scrapers)
		if got := n.Kubelet.Calls(); got != 1 {
			t.Errorf("%d scrapers, twice, made %d kubelet calls, want 0", scrapers, got-1)
		}
		if got := n.Sampler.Polls(); got != polls {
			t.Errorf("%d scrapers caused %d sampler polls, want 0", scrapers, got-polls)
		}
		if got := n.NVMLCalls(); got != nvmlCalls {
			t.Errorf("%d scrapers made %d NVML reads, want 0", scrapers, got-nvmlCalls)
		}
	}
}

// concurrentScrapes releases k full scrapes at once and checks each served
// container usage.
func concurrentScrapes(t *testing.T, coll *collector.Collector, k int) {
	t.Helper()
	start := make(chan struct{})
	errs := make(chan string, k)
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx := context.Background()
			var buf bytes.Buffer
			if _, err := scrape(ctx, coll.WithContext(ctx), &buf); err != nil {
				errs <- err.Error()
				return
			}
			if !strings.Contains(buf.String(), "containerGpuDutyCycle{") {
				errs <- "scrape served no container usage:\n" + buf.String()
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
