// Command soak runs the exporter binary (kube-gpu-exporter-sim) for a long
// time against a simulated node whose pods churn, and reports whether
// memory, goroutines and series stay bounded and whether deleted pods'
// series go away.
//
// The GPUs come from a GPU-only scenario (--simulate.scenario); the kubelet is
// a podresources.Server on a private socket whose pods are created and
// deleted every few seconds, passed with --kubelet.pod-resources-socket.
//
// Usage (scripts/soak.sh wraps it):
//
//	go run ./scripts/soak -binary bin/kube-gpu-exporter-sim -duration 10m
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/fakekubelet"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/handoff"
)

type options struct {
	binary   string
	duration time.Duration
	churn    time.Duration
	sample   time.Duration
	row      time.Duration
	gpus     int
	pods     int
	cacheTTL time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "bin/kube-gpu-exporter-sim", "kube-gpu-exporter-sim binary to run")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long to run")
	flag.DurationVar(&o.churn, "churn", 3*time.Second, "how often pods are deleted and created")
	flag.DurationVar(&o.sample, "sample", 5*time.Second, "how often RSS and goroutines are sampled")
	flag.DurationVar(&o.row, "row", time.Minute, "how often a table row is printed")
	flag.IntVar(&o.gpus, "gpus", 8, "simulated GPUs")
	flag.IntVar(&o.pods, "pods", 12, "GPU pods alive at any time")
	flag.DurationVar(&o.cacheTTL, "cache-ttl", time.Second, "--kubelet.cache-ttl of the exporter")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type sample struct {
	at         time.Duration
	rssKiB     int64
	goroutines float64
	heapInuse  float64
	series     int
	alive      int
}

var podLabel = regexp.MustCompile(`pod="(churn-\d+)"`)

func run(o options) error {
	dir, err := os.MkdirTemp("", "kge-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	scenario := filepath.Join(dir, "gpus.yaml")
	if err := os.WriteFile(scenario, fmt.Appendf(nil, "node: soak-node\nmodel: H100-SXM5-80GB\ngpus: %d\n", o.gpus), 0o644); err != nil {
		return err
	}
	src := newChurner(o.gpus, o.pods)
	sock := filepath.Join(dir, "kubelet.sock")
	srv := fakekubelet.NewServer(src)
	if err := srv.Listen(sock); err != nil {
		return err
	}
	defer srv.Stop()

	cmd, err := handoff.Command(o.binary, "--simulate.scenario="+scenario,
		"--kubelet.pod-resources-socket="+sock, "--kubelet.cache-ttl="+o.cacheTTL.String(), "--log.level=warn")
	if err != nil {
		return err
	}
	addr := cmd.Addr
	logf, err := os.Create(filepath.Join(dir, "exporter.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				fmt.Fprintf(os.Stderr, "exporter stopped: %v\n", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	url := "http://" + addr + "/metrics"
	if err := waitUp(client, url, exited); err != nil {
		return err
	}

	fmt.Printf("soak: %s, %d GPUs, %d GPU pods churning every %s, scrape every 1s, pid %d\n\n",
		o.duration, o.gpus, o.pods, o.churn, cmd.Process.Pid)
	fmt.Printf("%8s %9s %10s %12s %7s %6s %8s %8s %6s %6s\n", "elapsed", "RSS MiB", "goroutines", "heap MiB", "series", "pods", "scrapes", "failed", "stale", "missing")

	var (
		start                      = time.Now()
		scrapes, failed            int
		stale, missing             int
		createdTotal, deletedTotal int
		samples                    []sample
		firstErr                   string
	)
	settle := o.cacheTTL + 500*time.Millisecond
	scrapeT := time.NewTicker(time.Second)
	churnT := time.NewTicker(o.churn)
	sampleT := time.NewTicker(o.sample)
	rowT := time.NewTicker(o.row)
	defer scrapeT.Stop()
	defer churnT.Stop()
	defer sampleT.Stop()
	defer rowT.Stop()
	var last string
	printRow := func() {
		if len(samples) == 0 {
			return
		}
		s := samples[len(samples)-1] // the latest sample, at most -sample old
		fmt.Printf("%8s %9.1f %10.0f %12.1f %7d %6d %8d %8d %6d %6d\n", time.Since(start).Round(time.Second), float64(s.rssKiB)/1024, s.goroutines,
			s.heapInuse/(1<<20), s.series, s.alive, scrapes, failed, stale, missing)
	}
	deadline := time.After(o.duration)
loop:
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exporter exited during the soak: %w; log in %s", err, logf.Name())
		case <-deadline:
			break loop
		case now := <-churnT.C:
			c, d := src.step(now)
			createdTotal += c
			deletedTotal += d
		case <-scrapeT.C:
			t := time.Now()
			mustHave, mustLack := src.expectation(t, settle)
			body, err := get(client, url)
			scrapes++
			if err != nil {
				failed++
				if firstErr == "" {
					firstErr = err.Error()
				}
				continue
			}
			last = body
			seen := map[string]bool{}
			for _, m := range podLabel.FindAllStringSubmatch(body, -1) {
				seen[m[1]] = true
			}
			for n := range seen {
				if mustLack[n] {
					stale++
					if firstErr == "" {
						firstErr = fmt.Sprintf("scrape at %s still shows deleted pod %s", t.Sub(start).Round(time.Millisecond), n)
					}
				}
			}
			for n := range mustHave {
				if !seen[n] {
					missing++
					if firstErr == "" {
						firstErr = fmt.Sprintf("scrape at %s lacks live pod %s", t.Sub(start).Round(time.Millisecond), n)
					}
				}
			}
		case <-sampleT.C:
			if last == "" {
				continue
			}
			src.mu.Lock()
			alive := len(src.alive)
			src.mu.Unlock()
			samples = append(samples, sample{
				at: time.Since(start), rssKiB: rss(cmd.Process.Pid), goroutines: metric(last, "go_goroutines"),
				heapInuse: metric(last, "go_memstats_heap_inuse_bytes"), series: countSeries(last), alive: alive,
			})
		case <-rowT.C:
			printRow()
		}
	}
	printRow()
	return summarize(samples, scrapes, failed, stale, missing, createdTotal, deletedTotal, firstErr)
}

func summarize(samples []sample, scrapes, failed, stale, missing, created, deleted int, firstErr string) error {
	if len(samples) < 2 {
		return fmt.Errorf("too few samples (%d) for a verdict", len(samples))
	}
	// Compare the first and last fifths of the run, after the first sample.
	n := len(samples)
	fifth := max(1, n/5)
	early, late := samples[1:min(n, 1+fifth)], samples[n-fifth:]
	maxOf := func(s []sample, f func(sample) float64) float64 {
		m := f(s[0])
		for _, x := range s[1:] {
			m = max(m, f(x))
		}
		return m
	}
	rssF := func(s sample) float64 { return float64(s.rssKiB) / 1024 }
	grF := func(s sample) float64 { return s.goroutines }
	serF := func(s sample) float64 { return float64(s.series) }
	fmt.Printf("\npods created %d, deleted %d; scrapes %d, failed %d; stale series of deleted pods %d, live pods missing %d\n",
		created, deleted, scrapes, failed, stale, missing)
	fmt.Printf("RSS MiB       early max %.1f, late max %.1f, overall max %.1f\n", maxOf(early, rssF), maxOf(late, rssF), maxOf(samples, rssF))
	fmt.Printf("goroutines    early max %.0f, late max %.0f, overall max %.0f\n", maxOf(early, grF), maxOf(late, grF), maxOf(samples, grF))
	fmt.Printf("series        early max %.0f, late max %.0f, overall max %.0f\n", maxOf(early, serF), maxOf(late, serF), maxOf(samples, serF))

	var problems []string
	if failed > 0 || stale > 0 || missing > 0 {
		problems = append(problems, "first problem: "+firstErr)
	}
	if maxOf(late, grF) > maxOf(early, grF)+10 {
		problems = append(problems, "goroutines grew")
	}
	if maxOf(late, rssF) > 1.5*maxOf(early, rssF)+8 {
		problems = append(problems, "RSS grew")
	}
	if maxOf(late, serF) > maxOf(early, serF)*1.5+20 {
		problems = append(problems, "series grew")
	}
	if len(problems) > 0 {
		return fmt.Errorf("FAIL: %s", strings.Join(problems, "; "))
	}
	fmt.Println("PASS")
	return nil
}

func waitUp(client *http.Client, url string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exporter exited at start: %w", err)
		default:
		}
		if _, err := get(client, url); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("exporter not serving %s within 20s", url)
}

func get(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

// rss reads VmRSS in KiB from /proc.
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// metric returns the value of an unlabelled series.
func metric(body, name string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// countSeries counts the GPU series (the families the soak churns).
func countSeries(body string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "container") || strings.HasPrefix(line, "node") {
			n++
		}
	}
	return n
}
