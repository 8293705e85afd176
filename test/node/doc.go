// Package node runs the exporter on a real node: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler (scripts/kube-tools.sh builds
// them), a kubelet on containerd and runc (Debian's packages), the test's
// own device plugins advertising the simulated GPUs, and the exporter's
// image, built without a container engine, deployed by the Helm chart.
// Every case checks the exporter's series against what the kubelet's
// pod-resources socket says.
package node
