package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestRESTConfigFromKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://api.example.test:6443
    insecure-skip-tls-verify: true
users:
- name: test
  user:
    token: abc
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := RESTConfig(path)
	if err != nil {
		t.Fatalf("RESTConfig: %v", err)
	}
	if cfg.Host != "https://api.example.test:6443" || cfg.BearerToken != "abc" {
		t.Errorf("host/token = %q/%q", cfg.Host, cfg.BearerToken)
	}
	if cfg.UserAgent != "kube-gpu-exporter" || cfg.QPS != defaultQPS || cfg.Burst != defaultBurst {
		t.Errorf("user agent/QPS/burst = %q/%v/%v", cfg.UserAgent, cfg.QPS, cfg.Burst)
	}
}

func TestRESTConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	_, err := RESTConfig(missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing kubeconfig: err = %v, want mention of %s", err, missing)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing kubeconfig: err = %v, want wrapped os.ErrNotExist", err)
	}

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, err = RESTConfig("")
	if !errors.Is(err, rest.ErrNotInCluster) {
		t.Errorf("outside a cluster: err = %v, want wrapped rest.ErrNotInCluster", err)
	}
}
