package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// launch starts the real binary like startExporter, but waits with ready
// (TLS, authentication) instead of a plain GET.
func launch(t *testing.T, ready func(addr string) error, args ...string) *tooltest.Exporter {
	t.Helper()
	return tooltest.StartExporter(t, binaryFor(t, args), ready, args...)
}

// plainReady is ready once a scrape has been answered to its end: a body
// closed after its headers leaves the server writing the rest, still
// holding one of --web.max-requests' slots when the test goes on.
func plainReady(addr string) error {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube-gpu-exporter test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSAndBasicAuth serves the simulated node behind --web.config.file
// with TLS and a bcrypt-hashed user: only the right credentials over TLS get
// metrics; plain HTTP to the port and every wrong credential get none.
func TestTLSAndBasicAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	const user, password = "prometheus", "correct horse battery staple"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web-config.yml")
	cfg := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n", certFile, keyFile, user, hash)
	if err := os.WriteFile(webConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(addr, path string, auth func(*http.Request)) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
		if auth != nil {
			auth(req)
		}
		resp, err := tlsClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	e := launch(t, func(addr string) error {
		code, _, err := get(addr, "/metrics", basic(user, password))
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	}, "--simulate", "--web.config.file="+webConfig)

	code, body, err := get(e.Addr, "/metrics", basic(user, password))
	if err != nil || code != http.StatusOK || !strings.Contains(body, "\ncontainerGpuDutyCycle{") {
		t.Fatalf("right credentials: %d %v, %d bytes", code, err, len(body))
	}
	// The status page is behind the same TLS and authentication.
	code, body, err = get(e.Addr, "/", basic(user, password))
	if err != nil || code != http.StatusOK || !strings.Contains(body, `<table id="gpus">`) || !strings.Contains(body, "ml-training/trainer-0/trainer") {
		t.Fatalf("right credentials, status page: %d %v:\n%s", code, err, body)
	}
	for name, auth := range map[string]func(*http.Request){
		"no credentials": nil,
		"wrong password": basic(user, "Correct horse battery staple"),
		"wrong user":     basic("admin", password),
		"empty password": basic(user, ""),
		"bare hash":      basic(user, string(hash)),
	} {
		for _, path := range []string{"/metrics", "/", "/debug/pprof/"} {
			code, body, err := get(e.Addr, path, auth)
			if err != nil {
				t.Fatalf("%s %s: %v", name, path, err)
			}
			if code != http.StatusUnauthorized || strings.Contains(body, "kube_gpu_exporter") || strings.Contains(body, "trainer-0") {
				t.Errorf("%s %s: status %d, want 401 and no metrics", name, path, code)
			}
		}
	}

	// Plain HTTP to the TLS port: refused, whatever the credentials.
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.Addr+"/metrics", nil)
	req.SetBasicAuth(user, password)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "kube_gpu_exporter") {
			t.Errorf("plain HTTP to the TLS port: status %d, %d bytes; want 400 without metrics", resp.StatusCode, len(b))
		}
	}
	// A client that does not trust the certificate does not get through.
	untrusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	if _, err := untrusting.Get("https://" + e.Addr + "/metrics"); err == nil {
		t.Error("TLS handshake succeeded for a client that trusts no CA")
	}
}

// TestSlowClientIsCut opens connections that send half a request and stop,
// as a slowloris does. The server cuts each one within its
// ReadHeaderTimeout (10s), and serves other scrapes meanwhile. A header over
// the 64 KiB limit is refused outright.
func TestSlowClientIsCut(t *testing.T) {
	t.Parallel()
	e := launch(t, plainReady, "--simulate")
	const readHeaderTimeout = 10 * time.Second
	const slow = 3
	type cut struct {
		after time.Duration
		err   error
	}
	results := make(chan cut, slow)
	for i := 0; i < slow; i++ {
		conn, err := net.Dial("tcp", e.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(readHeaderTimeout + 10*time.Second))
			b, err := io.ReadAll(conn) // returns when the server closes
			if err == nil && bytes.Contains(b, []byte("kube_gpu_exporter")) {
				err = errors.New("served metrics to a half request")
			}
			results <- cut{time.Since(begin), err}
		}()
	}
	// Other clients are served while the slow ones hang.
	for i := 0; i < 3; i++ {
		if body := scrape(t, e.Addr); !strings.Contains(body, "kube_gpu_exporter_up") {
			t.Fatal("scrape during a slowloris lacks metrics")
		}
	}
	// Oversized headers get 431 at once.
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.Addr+"/metrics", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 128<<10))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("oversized header: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized header: status %d, want 431", resp.StatusCode)
		}
	}
	for i := 0; i < slow; i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("slow connection: %v after %v", r.err, r.after)
			continue
		}
		if r.after > readHeaderTimeout+2*time.Second {
			t.Errorf("slow connection cut after %v, want within ReadHeaderTimeout %v", r.after, readHeaderTimeout)
		}
	}
}

// TestMethodsAndPaths: only GET and HEAD on the landing page and the metrics
// path; everything else is 405 or 404, and profiling is absent unless
// --web.enable-pprof asks for it.
func TestMethodsAndPaths(t *testing.T) {
	t.Parallel()
	plain := launch(t, plainReady, "--simulate")
	profiled := launch(t, plainReady, "--simulate", "--web.enable-pprof")
	do := func(addr, method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader("x=1"))
		client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"GET", "/", 200},
		{"HEAD", "/", 200},
		{"POST", "/metrics", 405},
		{"PUT", "/metrics", 405},
		{"DELETE", "/metrics", 405},
		{"PATCH", "/metrics", 405},
		{"OPTIONS", "/metrics", 405},
		{"TRACE", "/metrics", 405},
		{"POST", "/", 405},
		{"GET", "/nope", 404},
		{"GET", "/metrics/extra", 404},
		{"GET", "/metricsx", 404},
		{"GET", "/debug/pprof/", 404},
		{"GET", "/debug/pprof/cmdline", 404},
		{"GET", "/debug/pprof/goroutine?debug=1", 404},
		{"GET", "/debug/vars", 404},
	}
	for _, tt := range tests {
		code, body := do(plain.Addr, tt.method, tt.path)
		if code != tt.want {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, code, tt.want)
		}
		if code != 200 && strings.Contains(body, "kube_gpu_exporter") {
			t.Errorf("%s %s: status %d but metrics in the body", tt.method, tt.path, code)
		}
		if tt.method == "HEAD" && body != "" {
			t.Errorf("HEAD %s returned a body", tt.path)
		}
	}
	// Path tricks are redirected to the cleaned path, which is not served.
	if code, _ := do(plain.Addr, "GET", "/metrics/../debug/pprof/"); code < 300 || code >= 400 {
		t.Errorf("GET /metrics/../debug/pprof/: status %d, want a redirect to the cleaned path", code)
	}
	// With the flag, profiling is served (GET only) and the metrics still are.
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		if code, _ := do(profiled.Addr, "GET", path); code != 200 {
			t.Errorf("--web.enable-pprof: GET %s = %d, want 200", path, code)
		}
	}
	if code, _ := do(profiled.Addr, "POST", "/debug/pprof/symbol"); code != 405 {
		t.Errorf("--web.enable-pprof: POST /debug/pprof/symbol = %d, want 405", code)
	}
	if code, _ := do(profiled.Addr, "GET", "/metrics"); code != 200 {
		t.Errorf("--web.enable-pprof: GET /metrics = %d", code)
	}
}

// gpuOnlyScenario writes a scenario with GPUs and no pods, so the exporter
// uses --kubelet.pod-resources-socket for the kubelet.
func gpuOnlyScenario(t *testing.T, gpus int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gpus.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, "node: storm-node\ngpus: %d\n", gpus), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTestKubelet returns a pod-resources Source for the binary in which
// each pod holds one GPU.
func newTestKubelet(gpus, pods int) *testkit.Kubelet {
	k := testkit.NewKubelet(&podresourcesv1.ListPodResourcesResponse{}, &podresourcesv1.AllocatableResourcesResponse{})
	var ids []string
	for i := 0; i < gpus; i++ {
		ids = append(ids, simulate.UUID(i))
	}
	k.AllocReply.Devices = []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}}
	for p := 0; p < pods; p++ {
		k.ListReply.PodResources = append(k.ListReply.PodResources, &podresourcesv1.PodResources{
			Namespace: "team", Name: fmt.Sprintf("job-%d", p),
			Containers: []*podresourcesv1.ContainerResources{{Name: "main", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{simulate.UUID(p % gpus)}}}}},
		})
	}
	return k
}

func serveKubelet(t *testing.T, k *testkit.Kubelet) string {
	t.Helper()
	_, sock := testkit.ServeKubelet(t, k)
	return sock
}

// vmRSS reads a process's resident set in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := readRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/pid/status")
}

// storm sends n concurrent scrapes and returns each status and body.
func storm(t *testing.T, addr string, n int) ([]int, []string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableKeepAlives: true}}
	codes, bodies := make([]int, n), make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get("http://" + addr + "/metrics")
			if err != nil {
				bodies[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				bodies[i] = err.Error()
				return
			}
			codes[i], bodies[i] = resp.StatusCode, string(b)
		}()
	}
	close(start)
	wg.Wait()
	return codes, bodies
}

var stormFamilies = []string{
	"containerGpuDutyCycle", "containerGpuRequests", "containerGpuLimits", "containerGpumemoryTotalBytes",
	"containerGpumemoryUsedBytes", "nodeGpuCapacity", "nodeGpuAllocatable", "nodeGpuDutyCycle",
	"nodeGpumemoryTotalBytes", "nodeGpumemoryUsedBytes", "kube_gpu_exporter_up", "kube_gpu_exporter_build_info",
	"go_goroutines", "process_resident_memory_bytes",
}

// stableSeries parses a scrape and returns the series that must not differ
// between concurrent scrapes of an unchanging node (everything but duty
// cycles, durations and the process's own numbers, scrapes included), one
// line each.
func stableSeries(body string) ([]string, map[string]bool, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	var out []string
	for name, mf := range mfs {
		names[name] = true
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") || strings.Contains(name, "DutyCycle") || strings.Contains(name, "duration") ||
			volatile.MatchString(name+"{") { // energy and the like move with the clock
			continue
		}
		for _, m := range mf.GetMetric() {
			var lv []string
			for _, l := range m.GetLabel() {
				lv = append(lv, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			out = append(out, fmt.Sprintf("%s{%s} %g", name, strings.Join(lv, ","), v))
		}
	}
	sort.Strings(out)
	return out, names, nil
}

// settled forces a garbage collection in the exporter (through pprof's
// heap endpoint), then returns its live heap, goroutines and RSS.
func settled(t *testing.T, e *tooltest.Exporter) (heap, goroutines float64, rss int64) {
	t.Helper()
	// Twice: objects parked in sync.Pools survive one collection.
	for i := 0; i < 2; i++ {
		resp, err := http.Get("http://" + e.Addr + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(scrape(t, e.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) float64 {
		mf, ok := mfs[name]
		if !ok || len(mf.GetMetric()) != 1 {
			t.Fatalf("no %s", name)
		}
		return mf.GetMetric()[0].GetGauge().GetValue()
	}
	return value("go_memstats_heap_alloc_bytes"), value("go_goroutines"), vmRSS(t, e.Cmd.Process.Pid)
}

// TestScrapeStorm sends 200 concurrent scrapes, three times, to the real
// binary on a simulated node with a slow kubelet (50 ms a call). Every scrape
// must be complete and agree with the others, the kubelet must see no more
// calls than the accounting loop makes (one per poll), and after each storm the
// exporter's heap and goroutines must come back to where they were.
func TestScrapeStorm(t *testing.T) {
	t.Parallel()
	const gpus, pods, n, rounds = 8, 16, 200, 3
	k := newTestKubelet(gpus, pods)
	k.Delay = 50 * time.Millisecond
	sock := serveKubelet(t, k)
	e := launch(t, plainReady, "--simulate.scenario="+gpuOnlyScenario(t, gpus), "--kubelet.pod-resources-socket="+sock,
		"--kubelet.cache-ttl=1s", "--web.max-requests=0", "--web.enable-pprof")
	want, _, err := stableSeries(scrape(t, e.Addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < pods*3 {
		t.Fatalf("only %d stable series before the storm", len(want))
	}
	heap0, gr0, rss0 := settled(t, e)

	var peakRSS int64
	for round := 0; round < rounds; round++ {
		calls := k.Calls()
		done, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
					if r, err := readRSS(e.Cmd.Process.Pid); err == nil && r > peakRSS {
						peakRSS = r
					}
				}
			}
		}()
		begin := time.Now()
		codes, bodies := storm(t, e.Addr, n)
		took := time.Since(begin)
		// Counted now: the accounting loop goes on calling once per poll
		// while the bodies are checked below, which takes seconds under
		// the race detector.
		made := k.Calls() - calls
		close(done)
		<-sampled
		for i := range codes {
			if codes[i] != http.StatusOK {
				t.Fatalf("round %d scrape %d: status %d: %.200s", round, i, codes[i], bodies[i])
			}
			got, names, err := stableSeries(bodies[i])
			if err != nil {
				t.Fatalf("round %d scrape %d: unparsable (truncated?): %v", round, i, err)
			}
			for _, f := range stormFamilies {
				if !names[f] {
					t.Fatalf("round %d scrape %d: family %s missing", round, i, f)
				}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("round %d scrape %d disagrees with the first scrape:\n%s", round, i, lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
			}
		}
		// Scrapes never call the kubelet: only the accounting loop does,
		// once per NVML poll (2s by default), whatever the storm.
		if limit := int64(took/(2*time.Second)) + 2; made > limit {
			t.Errorf("round %d: %d scrapes in %v made %d kubelet calls, want at most %d", round, n, took, made, limit)
		}
		// The storm's connections close asynchronously on the server side
		// and a loaded machine may lag behind: wait (at most 10 s) for the
		// heap and goroutines to come back, as a leak never does.
		heap, gr, rss := settled(t, e)
		for deadline := time.Now().Add(10 * time.Second); (heap > heap0+2<<20 || gr > gr0+5) && time.Now().Before(deadline); heap, gr, rss = settled(t, e) {
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("round %d: %d scrapes in %v, %d kubelet calls; after GC live heap %.1f MiB (%.1f before), goroutines %.0f (%.0f), RSS %d MiB (%d before, peak %d)",
			round, n, took.Round(time.Millisecond), made, heap/(1<<20), heap0/(1<<20), gr, gr0, rss>>20, rss0>>20, peakRSS>>20)
		// A scrape that left 10 KiB behind would add 2 MiB per storm.
		if heap > heap0+2<<20 {
			t.Errorf("round %d: live heap after GC grew from %.1f to %.1f MiB", round, heap0/(1<<20), heap/(1<<20))
		}
		if gr > gr0+5 {
			t.Errorf("round %d: %.0f goroutines after the storm, %.0f before", round, gr, gr0)
		}
		time.Sleep(1100 * time.Millisecond) // a poll between storms
	}
	// 200 scrapes at once with no cap is the worst case (the default
	// --web.max-requests=40 admits a fifth of it); their buffers are
	// transient, so the peak is bounded by the storm, not by its repetition.
	// With the telemetry and health families (about 70 series per GPU) a
	// scrape of the 8 GPUs is about three times the size it was without.
	if peakRSS > rss0+192<<20 {
		t.Errorf("peak RSS %d MiB during the storms, %d MiB before", peakRSS>>20, rss0>>20)
	}
}
