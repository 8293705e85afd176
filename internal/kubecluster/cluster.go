// Package kubecluster runs a real etcd and kube-apiserver on loopback for
// the end-to-end tests (scripts/kube-tools.sh builds them), with
// certificates, service-account keys and an audit log of their own.
package kubecluster

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// cluster is an etcd and a kube-apiserver on loopback, with certificates,
// service-account keys and an audit log of their own.
type Cluster struct {
	// Dir holds the certificates, keys, logs and etcd's data.
	Dir string
	// APIServer is the kube-apiserver binary and Args its flags, which a
	// test may change before StartAPIServer.
	APIServer string
	Args      []string
	// Addr is host:port of the API server.
	Addr string
	// Admin is a system:masters client configuration, Client its client.
	Admin  *rest.Config
	Client *kubernetes.Clientset
	// EtcdAddr is host:port of etcd's client URL.
	EtcdAddr string

	mu  sync.Mutex
	cmd *exec.Cmd // the running kube-apiserver
	out *os.File
}

// tools returns the paths of etcd and kube-apiserver: those scripts/kube-tools.sh
// built (it links them into .tools/bin), else PATH's.
func tools(t testing.TB) (etcd, apiserver string) {
	return tooltest.Require(t, "etcd"), tooltest.Require(t, "kube-apiserver")
}

func WritePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a key and a certificate signed by ca (self-signed when ca is
// nil) and returns them.
func Issue(t testing.TB, dir, name string, tmpl *x509.Certificate, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	WritePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	WritePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// auditPolicy records who listed and watched what; nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
# Watches are long-running: they are logged when their response starts.
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["system:serviceaccount:monitoring:kube-gpu-exporter"]
  - level: None
`

// Start starts etcd and kube-apiserver, with extra flags for the latter;
// both are stopped when the test ends.
func Start(t testing.TB, extra ...string) *Cluster {
	t.Helper()
	etcdBin, apiBin := tools(t)
	dir := t.TempDir()
	ca, caKey := Issue(t, dir, "ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "kubeapi-test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	Issue(t, dir, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"}, DNSNames: []string{"localhost", "kubernetes"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	Issue(t, dir, "admin", &x509.Certificate{
		Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saDER, _ := x509.MarshalECPrivateKey(saKey)
	WritePEM(t, filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", saDER)
	pubDER, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	WritePEM(t, filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pubDER)
	if err := os.WriteFile(filepath.Join(dir, "audit-policy.yaml"), []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}

	etcdAddr, peerAddr := tooltest.FreeAddr(t), tooltest.FreeAddr(t)
	etcd := exec.Command(etcdBin, "--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://"+etcdAddr, "--advertise-client-urls=http://"+etcdAddr,
		"--listen-peer-urls=http://"+peerAddr, "--initial-advertise-peer-urls=http://"+peerAddr,
		"--initial-cluster=default=http://"+peerAddr, "--unsafe-no-fsync", "--log-level=error")
	etcdLog, _ := os.Create(filepath.Join(dir, "etcd.log"))
	etcd.Stdout, etcd.Stderr = etcdLog, etcdLog
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Stop(etcd, syscall.SIGTERM) })

	c := &Cluster{Dir: dir, APIServer: apiBin, Addr: tooltest.FreeAddr(t), EtcdAddr: etcdAddr}
	c.Args = []string{
		"--etcd-servers=http://" + etcdAddr,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		// Since 1.37 the kubernetes Service's endpoint may not be a
		// loopback address; nothing here dials that Service.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + c.Addr[strings.LastIndex(c.Addr, ":")+1:],
		"--tls-cert-file=" + filepath.Join(dir, "server.crt"), "--tls-private-key-file=" + filepath.Join(dir, "server.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + filepath.Join(dir, "audit.log"), "--audit-log-mode=blocking", "--audit-log-format=json",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--enable-priority-and-fairness=false", "--profiling=false",
	}
	c.Args = append(c.Args, extra...)
	c.Admin = &rest.Config{Host: "https://" + c.Addr, QPS: 100, Burst: 200, TLSClientConfig: rest.TLSClientConfig{
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "admin.crt"), KeyFile: filepath.Join(dir, "admin.key"),
	}}
	if c.Client, err = kubernetes.NewForConfig(c.Admin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.StopAPIServer(syscall.SIGTERM) })
	start := time.Now()
	c.StartAPIServer(t)
	t.Logf("etcd and kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
	return c
}

// stop ends cmd with sig, and kills it if it is still running 10s later.
func Stop(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// startAPIServer starts kube-apiserver and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	out, err := os.OpenFile(filepath.Join(c.Dir, "apiserver.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.APIServer, c.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.cmd, c.out = cmd, out
	c.mu.Unlock()
	if err := c.waitReady(90 * time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "apiserver.log"))
		t.Fatalf("kube-apiserver: %v\n%s", err, Tail(string(log), 4000))
	}
}

// APIServerPID is the running kube-apiserver's process ID, for reading
// what it costs from /proc; 0 when none runs.
func (c *Cluster) APIServerPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// stopAPIServer stops kube-apiserver with sig: SIGKILL is a crash, which
// also spares the graceful shutdown's wait for open watches.
func (c *Cluster) StopAPIServer(sig syscall.Signal) {
	c.mu.Lock()
	cmd, out := c.cmd, c.out
	c.cmd, c.out = nil, nil
	c.mu.Unlock()
	if cmd != nil {
		Stop(cmd, sig)
		out.Close()
	}
}

func (c *Cluster) waitReady(timeout time.Duration) error {
	rt, err := rest.TransportFor(c.Admin)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	hc := &http.Client{Transport: rt, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := hc.Get("https://" + c.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %v: %w", timeout, last)
}

// kubeconfig writes a kubeconfig with token for this cluster (or addr, when
// not empty) and returns its path.
func (c *Cluster) Kubeconfig(t testing.TB, name, token, addr string) string {
	t.Helper()
	if addr == "" {
		addr = c.Addr
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://%s", certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: u}}]
current-context: test
`, addr, filepath.Join(c.Dir, "ca.crt"), token)
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// auditEvent is the part of an audit event the tests check.
type AuditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
}

func (c *Cluster) Audit(t testing.TB) []AuditEvent {
	t.Helper()
	f, err := os.Open(filepath.Join(c.Dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err == nil {
			out = append(out, ev)
		}
	}
	return out
}

func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Token mints an hour's token for ServiceAccount sa of namespace ns,
// creating the ServiceAccount first when create is set.
func (c *Cluster) Token(t testing.TB, ns, sa string, create bool) string {
	t.Helper()
	ctx := context.Background()
	if create {
		if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	hour := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &hour},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// AdminKubeconfig writes a kubeconfig with the system:masters client
// certificate, for the control-plane components and the kubelet, and
// returns its path.
func (c *Cluster) AdminKubeconfig(t testing.TB) string {
	t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://%s", certificate-authority: %q}}]
users: [{name: admin, user: {client-certificate: %q, client-key: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, c.Addr, filepath.Join(c.Dir, "ca.crt"), filepath.Join(c.Dir, "admin.crt"), filepath.Join(c.Dir, "admin.key"))
	path := filepath.Join(c.Dir, "admin.kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
