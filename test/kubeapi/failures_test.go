package kubeapi

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/kubecluster"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

func errorsTotal(reason string) []string {
	return []string{l("source", "kubernetes"), l("reason", reason)}
}

// waitWarn waits for a WARN line of e holding all of substrs.
func waitWarn(t *testing.T, e *tooltest.Exporter, timeout time.Duration, substrs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if w := warnings(e, substrs...); len(w) > 0 {
			return w[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no WARN line with %q within %v", substrs, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCounter waits until the named counter is above zero.
func waitCounter(t *testing.T, e *tooltest.Exporter, timeout time.Duration, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s, err := tooltest.Scrape(e.Addr); err == nil {
			if v, ok := s.Get(name, labels...); ok && v > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v still 0 after %v", name, labels, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testRestart stops the API server for outage: up is 0 meanwhile, the last
// known values stay, and after the restart the exporter is caught up, with
// changes made since, within 5s.
func testRestart(t *testing.T, c *kubecluster.Cluster, e *tooltest.Exporter, outage time.Duration) {
	ctx := context.Background()
	waitFor(t, e, 5*time.Second, upKube, req("with-sidecar", "main", 1))
	stopping := time.Now()
	c.StopAPIServer(syscall.SIGKILL)
	down := time.Now()
	t.Logf("kube-apiserver stopped in %v", down.Sub(stopping).Round(time.Millisecond))
	waitFor(t, e, 5*time.Second, want{"kube_gpu_exporter_up", []string{l("source", "kubernetes")}, 0})
	for time.Since(down) < outage {
		s, err := tooltest.Scrape(e.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Get("kube_gpu_exporter_up", l("source", "kubernetes")); v != 0 {
			t.Fatalf("up{source=kubernetes} = %v with the API server down", v)
		}
		if v, ok := s.Get("containerGpuRequests", l("pod", "with-sidecar"), l("container", "main")); !ok || v != 1 {
			t.Fatal("last known requests not served during the outage")
		}
		time.Sleep(500 * time.Millisecond)
	}
	starting := time.Now()
	c.StartAPIServer(t)
	ready := time.Now()
	t.Logf("kube-apiserver ready again in %v", ready.Sub(starting).Round(time.Millisecond))
	createPod(t, c, "after-restart", node, nil, container("main", gpus("1"), gpus("1")))
	if err := c.Client.CoreV1().Pods("ml").Delete(ctx, "with-sidecar", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e, 5*time.Second-time.Since(ready), upKube, req("after-restart", "main", 1),
		want{"containerGpuRequests", []string{l("pod", "with-sidecar")}, -1})
	t.Logf("caught up %v after the API server was ready again", time.Since(ready).Round(time.Millisecond))
}

// testNoBinding runs the exporter with a ServiceAccount that no role is
// bound to: every list is forbidden, which is logged at WARN with the
// user, and counted.
func testNoBinding(t *testing.T, c *kubecluster.Cluster) {
	e := startExporter(t, c, token(t, c, "unbound"))
	line := waitWarn(t, e, 10*time.Second, "forbidden", "verb=list", "system:serviceaccount:"+namespace+":unbound")
	if !strings.Contains(line, "resource=pods") && !strings.Contains(line, "resource=nodes") {
		t.Errorf("WARN line names no resource: %s", line)
	}
	waitCounter(t, e, 5*time.Second, "kube_gpu_exporter_errors_total", errorsTotal("list")...)
	waitFor(t, e, time.Second, want{"kube_gpu_exporter_up", []string{l("source", "kubernetes")}, 0})
}

// testMissingDRARule runs the exporter with --dra.enabled and a role
// without the resourceslices rule: DRA is off with a WARN, the rest works.
func testMissingDRARule(t *testing.T, c *kubecluster.Cluster) {
	ctx := context.Background()
	const sa = "no-dra"
	token := token(t, c, sa)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"list", "watch"}},
	}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: namespace}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, c, token, "--dra.enabled")
	waitWarn(t, e, 10*time.Second, "forbidden", "resource=resourceslices", "DRA")
	waitCounter(t, e, 5*time.Second, "kube_gpu_exporter_errors_total", errorsTotal("dra")...)
	waitFor(t, e, 5*time.Second, upKube, req("after-restart", "main", 1))
}

// testClosedPort points the exporter at a port nobody listens on.
func testClosedPort(t *testing.T, c *kubecluster.Cluster) {
	e := startExporterAt(t, c.Kubeconfig(t, "closed", "token", tooltest.FreeAddr(t)))
	waitWarn(t, e, 10*time.Second, "connection refused")
	waitCounter(t, e, 5*time.Second, "kube_gpu_exporter_errors_total", errorsTotal("list")...)
}

// testUnauthorized runs the exporter with a token the API server did not
// issue.
func testUnauthorized(t *testing.T, c *kubecluster.Cluster) {
	e := startExporter(t, c, "not-a-token")
	waitWarn(t, e, 10*time.Second, "cause=unauthorized")
	waitCounter(t, e, 5*time.Second, "kube_gpu_exporter_errors_total", errorsTotal("list")...)
}

// testWrongCA runs the exporter with a kubeconfig that trusts another CA.
func testWrongCA(t *testing.T, c *kubecluster.Cluster) {
	dir := t.TempDir()
	kubecluster.Issue(t, dir, "other-ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "another-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
	cfg := strings.Replace(readFile(t, c.Kubeconfig(t, "wrong-ca", "token", "")), filepath.Join(c.Dir, "ca.crt"), filepath.Join(dir, "other-ca.crt"), 1)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporterAt(t, path)
	waitWarn(t, e, 10*time.Second, "cause=tls")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
