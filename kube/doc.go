// Package kube reads what the Kubernetes API knows about GPUs on this node:
// the GPU requests and limits of every container of the pods bound to it,
// and the node's GPU capacity and allocatable. The kubelet's pod-resources
// API says which devices a container was given; only the API server knows
// what the pod spec asked for and what the node advertises, which is what
// the containerGpuRequests, containerGpuLimits, nodeGpuCapacity and
// nodeGpuAllocatable metrics report.
//
// # Scope
//
// The exporter runs as a DaemonSet, one instance per node, so a Watcher
// reads only its own node, with two informers:
//
//   - Node, field selector metadata.name=<node>;
//   - Pod, all namespaces, field selector spec.nodeName=<node>.
//
// With DRA enabled (Config.DRA) a third informer reads this node's
// ResourceSlices (resource.k8s.io/v1, field selector spec.nodeName=<node>):
// the devices each DRA driver publishes, and the NVML UUID in each device's
// uuid attribute, so that devices allocated through claims resolve to NVML
// devices, and their taints. It needs list and watch on resourceslices. A
// fourth reads the DeviceTaintRules (KEP-5055), which taint devices by
// driver, pool and name: they are cluster-scoped and have no node to
// select on, so all are read (list and watch on devicetaintrules); the
// exporter serves the taints that fall on its node's GPUs.
//
// Nothing else cluster-wide is listed or watched: the API server's load grows
// with the pods of one node per exporter, and the RBAC needed is list and
// watch on pods and nodes. A transform (cache.TransformFunc) rebuilds
// each object with only the fields read here (names, UIDs, GPU entries of
// resources, phase, container IDs, a pod's controller and the labels
// PodWorkloadOf reads) before it is cached, so other labels, annotations,
// managed fields, environment, images and the node's image list do not stay
// in memory.
//
// # Scrape path
//
// Watcher.Snapshot reads the informer stores and never calls the API
// server, so a slow or unreachable API server cannot slow a scrape. Its
// output is sorted so the exposition is stable. The Snapshot also carries
// lookups from pod UID and from runtime container ID (as in
// status.containerStatuses[].containerID, scheme stripped) to names, for
// attributing GPU processes found through their cgroups.
//
// # Health
//
// Every list and watch request goes through a wrapper (health.go) that
// records its outcome, and the events of every watch pass through it too.
// An informer is healthy only while its cache is caught up with the API
// server: after a list that followed the last error (a plain list and the
// watch opened from it, or a streaming list up to its initial-events-end
// bookmark). Any failed request, error event or expired resource version
// makes it unhealthy. Snapshot.Healthy is true when the pod and node
// informers are healthy; the collector exports it as
// kube_gpu_exporter_up{source="kubernetes"}. Meanwhile the informers keep
// their last state, and Snapshot keeps serving it: during an API outage the
// request and capacity metrics stay at their last known values rather than
// disappearing.
//
// Failures that pass by themselves (refused or reset connections, 5xx) are
// retried by the wrapper within two seconds, so that the reflector's
// backoff, which grows to 30s, does not delay reading a restarted API
// server; a watch it would resume after an error is answered with "expired"
// instead, so that it relists at once. Permission and configuration errors
// are left to the reflector's backoff. The first failure of each cause
// (forbidden with verb, resource and user; unauthorized; TLS; connection
// refused) is logged at WARN.
//
// The ResourceSlice informer is optional: its failures count under their
// own reason ("dra"), are logged at WARN, and leave the source healthy;
// until it has listed, DRA is treated as not in use.
//
// # Workloads
//
// PodWorkloadOf names the workload that runs a pod (a Deployment, a
// JobSet, a PyTorchJob, ...) from the pod's own labels and controller
// reference, without reading ReplicaSets, Jobs or custom resources: no
// permission beyond pods is needed, and nothing more is watched.
//
// Pure functions PodContainerResources and NodeGPUResources hold the rules
// (terminal pods excluded, a missing request or limit taken from the other,
// init and sidecar containers included) so they can be tested on their own.
package kube
