package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
)

// PodWorkload names the workload that runs one GPU pod.
type PodWorkload = kube.PodWorkload

// podLabels are the shared labels of per-pod families.
var podLabels = []string{"node", "namespace", "pod"}

func podWorkloadValues(node string) func([]string, *PodWorkload) []string {
	return func(b []string, w *PodWorkload) []string { return append(b, node, w.Namespace, w.Pod) }
}

// workloadFamilies are read for every pod holding or requesting GPUs whose
// spec the Kubernetes API gave.
var workloadFamilies = []Family[PodWorkload]{{
	Name: Prefix + "_pod_workload_info",
	Help: "1 per pod holding or requesting GPUs: the workload that runs it, named from the pod's labels and controller " +
		"(Deployment, StatefulSet, DaemonSet, Job, CronJob, JobSet, LeaderWorkerSet, PyTorchJob and the other Kubeflow jobs, " +
		"RayCluster, RayJob, RayService, another controller's kind, or Pod for a pod without one).",
	Labels: []string{"workload_kind", "workload_name"},
	Each:   func(w *PodWorkload, emit func(float64, ...string)) { emit(1, w.Kind, w.Name) },
}}

// podWorkloads names the workload of every pod with a GPU request row
// (sorted, each pod once) that the specs know; pods only the kubelet knows
// get none until the informer has seen them.
func podWorkloads(specs *Specs, pods []PodResource) []PodWorkload {
	if specs == nil || specs.Workloads == nil {
		return nil
	}
	var out []PodWorkload
	for i, p := range pods {
		if i > 0 && pods[i-1].Namespace == p.Namespace && pods[i-1].Pod == p.Pod {
			continue // another resource of the same pod
		}
		if w, ok := specs.Workloads.PodWorkload(p.Namespace, p.Pod); ok {
			out = append(out, PodWorkload{Namespace: p.Namespace, Pod: p.Pod, Workload: w})
		}
	}
	return out
}
