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
// only by the sampler's own polls, never by a scrape, and concurrent scrapes
// share one kubelet round trip, then its cached reply.
func TestSourceCallsIndependentOfScrapers(t *testing.T) {
	c := benchnode.Cases()[0]
	for _, scrapers := range []int{1, 50} {
		dir, err := os.MkdirTemp("", "kge-calls-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		n, err := benchnode.Start(c, dir, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		coll := collector.New(collector.Config{NodeName: "gpu-node-01", NVMLStaleAfter: time.Hour}, n.Sampler, n.Kubelet, nil)
		polls, nvmlCalls := n.Sampler.Polls(), n.NVMLCalls()
		if nvmlCalls == 0 {
			t.Fatal("the sampler's poll read nothing from the NVML mock")
		}

		// A cold cache: every scraper arrives at once.
		concurrentScrapes(t, coll, scrapers)
		cold := n.Kubelet.Calls()
		// One round trip, shared. A second is possible only if a scraper
		// found the cache empty just before the first call stored its
		// reply; it can never be one per scraper.
		if cold < 1 || cold > 2 {
			t.Errorf("%d scrapers on a cold cache made %d kubelet calls, want 1 (2 at most)", scrapers, cold)
		}
		// A warm cache: no round trip at all.
		concurrentScrapes(t, coll, scrapers)
		if warm := n.Kubelet.Calls() - cold; warm != 0 {
			t.Errorf("%d scrapers on a warm cache made %d kubelet calls, want 0", scrapers, warm)
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
