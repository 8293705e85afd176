package kubeapi

import (
	"bufio"
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

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// cluster is an etcd and a kube-apiserver on loopback, with certificates,
// service-account keys and an audit log of their own.
type cluster struct {
	dir       string
	apiserver string // binary
	args      []string
	addr      string // host:port of the API server
	admin     *rest.Config
	client    *kubernetes.Clientset

	mu  sync.Mutex
	cmd *exec.Cmd // the running kube-apiserver
	out *os.File
}

// tools returns the paths of etcd and kube-apiserver: those scripts/kube-tools.sh
// built (it links them into .tools/bin), else PATH's.
func tools(t *testing.T) (etcd, apiserver string) {
	return tooltest.Require(t, "etcd"), tooltest.Require(t, "kube-apiserver")
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a key and a certificate signed by ca (self-signed when ca is
// nil) and returns them.
func issue(t *testing.T, dir, name string, tmpl *x509.Certificate, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
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
	writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", keyDER)
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

// startCluster starts etcd and kube-apiserver, with extra flags for the
// latter; both are stopped when the test ends.
func startCluster(t *testing.T, extra ...string) *cluster {
	t.Helper()
	etcdBin, apiBin := tools(t)
	dir := t.TempDir()
	ca, caKey := issue(t, dir, "ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "kubeapi-test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	issue(t, dir, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"}, DNSNames: []string{"localhost", "kubernetes"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	issue(t, dir, "admin", &x509.Certificate{
		Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saDER, _ := x509.MarshalECPrivateKey(saKey)
	writePEM(t, filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", saDER)
	pubDER, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	writePEM(t, filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pubDER)
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
	t.Cleanup(func() { stop(etcd, syscall.SIGTERM) })

	c := &cluster{dir: dir, apiserver: apiBin, addr: tooltest.FreeAddr(t)}
	c.args = []string{
		"--etcd-servers=http://" + etcdAddr,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + c.addr[strings.LastIndex(c.addr, ":")+1:],
		"--tls-cert-file=" + filepath.Join(dir, "server.crt"), "--tls-private-key-file=" + filepath.Join(dir, "server.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// No controller manager creates the namespaces' default
		// ServiceAccounts that this plugin would wait for.
		"--disable-admission-plugins=ServiceAccount",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + filepath.Join(dir, "audit.log"), "--audit-log-mode=blocking", "--audit-log-format=json",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--enable-priority-and-fairness=false", "--profiling=false",
	}
	c.args = append(c.args, extra...)
	c.admin = &rest.Config{Host: "https://" + c.addr, QPS: 100, Burst: 200, TLSClientConfig: rest.TLSClientConfig{
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "admin.crt"), KeyFile: filepath.Join(dir, "admin.key"),
	}}
	if c.client, err = kubernetes.NewForConfig(c.admin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stopAPIServer(syscall.SIGTERM) })
	start := time.Now()
	c.startAPIServer(t)
	t.Logf("etcd and kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
	return c
}

// stop ends cmd with sig, and kills it if it is still running 10s later.
func stop(cmd *exec.Cmd, sig syscall.Signal) {
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
func (c *cluster) startAPIServer(t *testing.T) {
	t.Helper()
	out, err := os.OpenFile(filepath.Join(c.dir, "apiserver.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.apiserver, c.args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.cmd, c.out = cmd, out
	c.mu.Unlock()
	if err := c.waitReady(90 * time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "apiserver.log"))
		t.Fatalf("kube-apiserver: %v\n%s", err, tail(string(log), 4000))
	}
}

// stopAPIServer stops kube-apiserver with sig: SIGKILL is a crash, which
// also spares the graceful shutdown's wait for open watches.
func (c *cluster) stopAPIServer(sig syscall.Signal) {
	c.mu.Lock()
	cmd, out := c.cmd, c.out
	c.cmd, c.out = nil, nil
	c.mu.Unlock()
	if cmd != nil {
		stop(cmd, sig)
		out.Close()
	}
}

func (c *cluster) waitReady(timeout time.Duration) error {
	rt, err := rest.TransportFor(c.admin)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	hc := &http.Client{Transport: rt, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := hc.Get("https://" + c.addr + "/readyz")
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
func (c *cluster) kubeconfig(t *testing.T, name, token, addr string) string {
	t.Helper()
	if addr == "" {
		addr = c.addr
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://%s", certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: u}}]
current-context: test
`, addr, filepath.Join(c.dir, "ca.crt"), token)
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// auditEvent is the part of an audit event the tests check.
type auditEvent struct {
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

func (c *cluster) audit(t *testing.T) []auditEvent {
	t.Helper()
	f, err := os.Open(filepath.Join(c.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err == nil {
			out = append(out, ev)
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
