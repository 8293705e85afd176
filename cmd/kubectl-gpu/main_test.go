package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestMain(m *testing.M) {
	code := m.Run()
	tooltest.RemoveBuilt()
	os.Exit(code)
}

// kubectl runs the command in-process and returns its output and exit code.
func kubectl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./cmd/kubectl-gpu -update to accept):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// kubeconfig writes a kubeconfig whose context "test" (namespace ml) is the
// API server api (over TLS: client-go sends no credentials in the clear),
// and another context, the current one, pointing nowhere.
func kubeconfig(t *testing.T, api *httptest.Server) string {
	t.Helper()
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority-data: %q}
- name: nowhere
  cluster: {server: "http://127.0.0.1:1"}
users:
- name: test
  user: {token: test-token}
contexts:
- name: test
  context: {cluster: test, user: test, namespace: ml}
- name: nowhere
  context: {cluster: nowhere, user: test}
current-context: nowhere
`, api.URL, ca)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeAPI is an API server that answers the few requests the plugin makes:
// the lists of services and pods, and the service and pod proxies, which
// it forwards to the Prometheus and the exporter this test runs on
// loopback. With forbidden, it answers every list as RBAC denying it.
type fakeAPI struct {
	prometheus, exporter string // host:port; "" serves none
	forbidden            bool

	mu       sync.Mutex
	requests []string
}

func (f *fakeAPI) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.RequestURI())
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer test-token" {
		status(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	p := r.URL.Path
	switch {
	case f.forbidden && (p == "/api/v1/services" || p == "/api/v1/pods" || strings.HasSuffix(p, "/services") || strings.HasSuffix(p, "/pods")):
		status(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(`%s is forbidden: User "test" cannot list resource`, p))
	case p == "/api/v1/services":
		items := ""
		if f.prometheus != "" && r.URL.Query().Get("labelSelector") == "app.kubernetes.io/name=prometheus" {
			items = `{"metadata":{"name":"prometheus-k8s","namespace":"monitoring"},"spec":{"ports":[{"name":"reloader","port":8080},{"name":"web","port":9090}]}}`
		}
		fmt.Fprintf(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[%s]}`, items)
	case p == "/api/v1/pods":
		items := ""
		if f.exporter != "" && r.URL.Query().Get("labelSelector") == "app.kubernetes.io/name=kube-gpu-exporter" {
			items = `{"metadata":{"name":"kube-gpu-exporter-7xk2p","namespace":"monitoring"},"spec":{"containers":[{"name":"exporter","ports":[{"name":"metrics","containerPort":9871}]}]},"status":{"phase":"Running"}},
				{"metadata":{"name":"kube-gpu-exporter-pending","namespace":"monitoring"},"spec":{"containers":[{"name":"exporter"}]},"status":{"phase":"Pending"}},
				{"metadata":{"name":"kube-gpu-exporter-gone","namespace":"monitoring"},"spec":{"containers":[{"name":"exporter","ports":[{"name":"metrics","containerPort":9871}]}]},"status":{"phase":"Running"}}`
		}
		fmt.Fprintf(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[%s]}`, items)
	case f.prometheus != "" && strings.HasPrefix(p, "/api/v1/namespaces/monitoring/services/prometheus-k8s:web/proxy/"):
		forward(w, r, f.prometheus, strings.TrimPrefix(p, "/api/v1/namespaces/monitoring/services/prometheus-k8s:web/proxy"))
	case f.exporter != "" && p == "/api/v1/namespaces/monitoring/pods/kube-gpu-exporter-7xk2p:9871/proxy/metrics":
		forward(w, r, f.exporter, "/metrics")
	case p == "/api/v1/namespaces/monitoring/pods/kube-gpu-exporter-gone:9871/proxy/metrics":
		// As the API server answers for a pod whose node went away.
		status(w, http.StatusServiceUnavailable, "ServiceUnavailable", "error trying to reach service: dial tcp 10.0.0.9:9871: connect: no route to host")
	default:
		status(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
	}
}

// forward proxies r to host's path, as the API server's proxy does.
func forward(w http.ResponseWriter, r *http.Request, host, path string) {
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL = &url.URL{Scheme: "http", Host: host, Path: path, RawQuery: r.URL.RawQuery}
		pr.Out.Host = host
		pr.Out.Header.Del("Authorization")
	}}
	rp.ServeHTTP(w, r)
}

// query asks Prometheus for expr and returns how many series answer.
func query(addr, expr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?" + url.Values{"query": {expr}}.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("%s: %w", b, err)
	}
	return len(r.Data.Result), nil
}

// TestTop runs the simulated node of testdata/node.yaml, whose readings
// hold still, under a real Prometheus with the project's recording rules,
// and compares what `kubectl gpu top` prints with golden output: from
// --prometheus-url, from a Prometheus service found and reached through a
// (fake) API server, and from the exporter scraped through its pod proxy,
// which must print the same tables.
func TestTop(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	tooltest.Require(t, "prometheus")
	scenario, err := filepath.Abs(filepath.Join("testdata", "node.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	exp := tooltest.StartExporter(t, tooltest.SimBinary(t), tooltest.Scraped, "--simulate.scenario="+scenario)
	rules, err := os.ReadFile(filepath.Join(tooltest.RepoRoot(), "deploy", "prometheus", "recording.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The rules' groups run every second here, not every minute.
	fast := strings.ReplaceAll(string(rules), "interval: 1m", "interval: 1s")
	prom := tooltest.StartPrometheus(t, fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [recording.rules.yaml]
scrape_configs:
  - job_name: kube-gpu-exporter
    static_configs: [{targets: [%q]}]
`, exp.Addr), map[string]string{"recording.rules.yaml": fast})

	// Ready when Prometheus has the recorded duty cycle and the Xid the
	// node reports a second after start has failed its GPU.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var missing []string
		for _, q := range []string{"node:nodeGpuDutyCycle:avg", `kube_gpu_health_status{status="failed"}`, `kube_gpu_container_health_status{status="failed"}`, "containerGpuDutyCycle"} {
			if n, err := query(prom, q); err != nil || n == 0 {
				missing = append(missing, fmt.Sprintf("%s (%v)", q, err))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus lacks within 30 s: %s", strings.Join(missing, ", "))
		}
		time.Sleep(250 * time.Millisecond)
	}

	views := []struct {
		golden string
		args   []string
	}{
		{"top-nodes.golden", []string{"top", "nodes"}},
		{"top-pods-all.golden", []string{"top", "pods", "-A"}},
		{"top-pods-ml.golden", []string{"top", "pods"}}, // the context's namespace
		{"top-pods-notebooks.golden", []string{"top", "pods", "-n", "notebooks"}},
	}
	t.Run("prometheus-url", func(t *testing.T) {
		api := httptest.NewTLSServer(&fakeAPI{}) // lists nothing: the namespace of the context only
		defer api.Close()
		cfg := kubeconfig(t, api)
		for _, v := range views {
			out, errOut, code := kubectl(t, append(v.args, "--prometheus-url=http://"+prom, "--kubeconfig="+cfg, "--context=test")...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", v.args, code, errOut)
			}
			golden(t, v.golden, out)
		}
		out, errOut, code := kubectl(t, "top", "nodes", "-o", "json", "--prometheus-url=http://"+prom, "--kubeconfig="+cfg, "--context=test")
		if code != 0 {
			t.Fatalf("json: exit %d: %s", code, errOut)
		}
		golden(t, "top-nodes-json.golden", strings.ReplaceAll(out, prom, "PROMETHEUS"))
	})

	t.Run("service proxy", func(t *testing.T) {
		fake := &fakeAPI{prometheus: prom}
		api := httptest.NewTLSServer(fake)
		defer api.Close()
		cfg := kubeconfig(t, api)
		for _, v := range views {
			out, errOut, code := kubectl(t, append(v.args, "--kubeconfig="+cfg, "--context=test")...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", v.args, code, errOut)
			}
			golden(t, v.golden, out)
		}
		// The node's duty cycle came from the recording rule's series.
		recorded := false
		for _, r := range fake.seen() {
			if strings.Contains(r, "/services/prometheus-k8s:web/proxy/api/v1/query?query=node%3AnodeGpuDutyCycle%3Aavg") {
				recorded = true
			}
		}
		if !recorded {
			t.Errorf("the recorded series node:nodeGpuDutyCycle:avg was not asked for; requests:\n%s", strings.Join(fake.seen(), "\n"))
		}
	})

	t.Run("pod proxy", func(t *testing.T) {
		// RBAC lets the user list pods but no service: no Prometheus is
		// found, the exporter is scraped through its pod proxy.
		// One exporter pod is on a node gone away: the others' numbers are
		// printed, and a warning says what they lack.
		fake := &fakeAPI{exporter: exp.Addr}
		api := httptest.NewTLSServer(fake)
		defer api.Close()
		cfg := kubeconfig(t, api)
		for _, v := range views {
			out, errOut, code := kubectl(t, append(v.args, "--kubeconfig="+cfg, "--context=test")...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", v.args, code, errOut)
			}
			golden(t, v.golden, out)
			if !strings.Contains(errOut, "warning: exporter pods labelled app.kubernetes.io/name=kube-gpu-exporter (through the API server's pod proxy) did not answer in full: GET "+api.URL+
				"/api/v1/namespaces/monitoring/pods/kube-gpu-exporter-gone:9871/proxy/metrics: 503 Service Unavailable") {
				t.Errorf("%v: no warning about the exporter that did not answer:\n%s", v.args, errOut)
			}
		}
		scraped := false
		for _, r := range fake.seen() {
			if strings.Contains(r, "kube-gpu-exporter-pending") {
				t.Errorf("a pod not running was scraped: %s", r)
			}
			scraped = scraped || r == "/api/v1/namespaces/monitoring/pods/kube-gpu-exporter-7xk2p:9871/proxy/metrics"
		}
		if !scraped {
			t.Errorf("the exporter was not scraped through its pod proxy; requests:\n%s", strings.Join(fake.seen(), "\n"))
		}
	})
}

// TestNothingAnswers: with no Prometheus and RBAC refusing every list, the
// command fails with a message naming each source tried and why.
func TestNothingAnswers(t *testing.T) {
	api := httptest.NewTLSServer(&fakeAPI{forbidden: true})
	defer api.Close()
	cfg := kubeconfig(t, api)
	out, errOut, code := kubectl(t, "top", "nodes", "--kubeconfig="+cfg, "--context=test", "--prometheus-url=http://127.0.0.1:1")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	for _, want := range []string{
		"no GPU metrics found; tried:",
		"Prometheus at http://127.0.0.1:1: Get ",
		"exporter pods: list pods labelled app.kubernetes.io/name=kube-gpu-exporter: GET " + api.URL + "/api/v1/pods?labelSelector=app.kubernetes.io%2Fname%3Dkube-gpu-exporter: 403 Forbidden",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error lacks %q:\n%s", want, errOut)
		}
	}
	_, errOut, code = kubectl(t, "top", "pods", "--kubeconfig="+cfg, "--context=test")
	if code != 1 || !strings.Contains(errOut, "Prometheus services: list services labelled app.kubernetes.io/name=prometheus") {
		t.Errorf("without --prometheus-url: exit %d:\n%s", code, errOut)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"top", "nodes", "-o", "yaml"},
		{"top", "gpus"},
		{"top", "pods", "--request-timeout=soon"},
	} {
		out, errOut, code := kubectl(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "kubectl-gpu: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and an error", args, code, out, errOut)
		}
	}
}

// TestDocsSample keeps the sample output in the README and docs equal to
// the golden files TestTop checks; -update rewrites it.
func TestDocsSample(t *testing.T) {
	var sample strings.Builder
	sample.WriteString("```\n")
	for _, v := range []struct{ cmd, golden string }{
		{"kubectl gpu top nodes", "top-nodes.golden"},
		{"kubectl gpu top pods -A", "top-pods-all.golden"},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", v.golden))
		if err != nil {
			t.Fatal(err)
		}
		sample.WriteString("$ " + v.cmd + "\n")
		sample.Write(b)
	}
	sample.WriteString("```\n")
	for _, doc := range []string{"README.md", filepath.Join("docs", "kubectl-gpu.md")} {
		path := filepath.Join(tooltest.RepoRoot(), doc)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		start := strings.Index(text, "<!-- sample: ")
		end := strings.Index(text, "<!-- end sample -->")
		if start < 0 || end < start {
			t.Errorf("%s: no <!-- sample: --> ... <!-- end sample --> block", doc)
			continue
		}
		start += strings.Index(text[start:], "\n") + 1
		if text[start:end] == sample.String() {
			continue
		}
		if *update {
			if err := os.WriteFile(path, []byte(text[:start]+sample.String()+text[end:]), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s: the sample differs from the golden files (go test ./cmd/kubectl-gpu -update):\n%s", doc, text[start:end])
	}
}
