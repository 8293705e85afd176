// Package kubeapi tests the exporter against a real etcd and kube-apiserver
// on loopback (scripts/kube-tools.sh builds and caches them), with the
// chart's own RBAC and a token of its ServiceAccount: what the fake
// clientset cannot show (watch caches, 410 after a restart, RBAC denials,
// field selectors as the server applies them, audit of what was asked).
package kubeapi
