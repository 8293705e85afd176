package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// UserAgent identifies the exporter in API server audit logs and metrics, so
// that operators can tell its (few) requests apart from other clients.
const UserAgent = "kube-gpu-exporter"

// The exporter issues one list and one long-running watch per informer
// (two informers, three with DRA), and relists only after errors. A small budget is enough
// and protects the API server when a DaemonSet of thousands of exporters
// relists at the same time.
const (
	defaultQPS   = 5
	defaultBurst = 10
)

// RESTConfig builds the client configuration: the in-cluster service
// account when kubeconfig is "" (the DaemonSet case), otherwise the given
// kubeconfig file (for running outside the cluster). It sets a modest
// QPS/Burst, the exporter's user agent and protobuf encoding, which the API
// server supports for pods and nodes and which is cheaper to decode.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config (set --kubeconfig when running outside a pod): %w", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %q: %w", kubeconfig, err)
		}
	}
	cfg.QPS = defaultQPS
	cfg.Burst = defaultBurst
	cfg.UserAgent = UserAgent
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return cfg, nil
}
