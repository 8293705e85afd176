package kube

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload is what runs a pod, as a person names it: a Deployment rather
// than its ReplicaSet, a JobSet rather than one of its Jobs, a PyTorchJob
// rather than its master pod.
type Workload struct {
	Kind, Name string
}

// PodWorkload is the workload of one pod.
type PodWorkload struct {
	Namespace, Pod string
	Workload
}

// Labels the workload controllers put on the pods they create. They name
// the workload above the pod's owner (a JobSet owns Jobs that own pods), so
// that no object but the pod has to be read.
const (
	labelPodTemplateHash = "pod-template-hash"                // Deployment's ReplicaSets
	labelJobSet          = "jobset.sigs.k8s.io/jobset-name"   // JobSet (and Kubeflow Trainer v2's TrainJob)
	labelLWS             = "leaderworkerset.sigs.k8s.io/name" // LeaderWorkerSet
	labelKubeflowJob     = "training.kubeflow.org/job-name"   // Kubeflow training operator v1, MPI operator v2
	labelKubeflowOp      = "training.kubeflow.org/operator-name"
	labelRayCluster      = "ray.io/cluster"             // KubeRay: the RayCluster
	labelRayOriginKind   = "ray.io/originated-from-crd" // RayJob or RayService that made the cluster
	labelRayOriginName   = "ray.io/originated-from-cr-name"
)

// workloadLabels are the labels PodWorkloadOf reads; the pod transform keeps
// these and drops the others.
var workloadLabels = []string{
	labelPodTemplateHash, labelJobSet, labelLWS, labelKubeflowJob, labelKubeflowOp,
	labelRayCluster, labelRayOriginKind, labelRayOriginName,
}

// kubeflowKinds maps the Kubeflow operators' names (the operator-name label,
// "pytorchjob-controller" and the like) to the kinds of their jobs.
var kubeflowKinds = map[string]string{
	"pytorchjob": "PyTorchJob", "tfjob": "TFJob", "mpijob": "MPIJob", "mpi-operator": "MPIJob",
	"xgboostjob": "XGBoostJob", "paddlejob": "PaddleJob", "jaxjob": "JAXJob",
}

// kubeflowGroup is the API group of the Kubeflow training jobs.
const kubeflowGroup = "kubeflow.org"

// PodWorkloadOf names the workload that runs pod from its labels and its
// controller's owner reference alone, without reading any other object:
//
//   - labels of the controllers that stand above the pod's owner first:
//     JobSet, LeaderWorkerSet, Kubeflow training jobs, KubeRay (the RayJob
//     or RayService that made the cluster, else the RayCluster);
//   - a ReplicaSet named <name>-<pod-template-hash> is Deployment <name>;
//   - a Job named <name>-<minutes since 1970> is CronJob <name>, as the
//     CronJob controller names the Jobs it schedules (a Job given such a
//     name by hand is taken for a CronJob's too);
//   - any other controller is itself (StatefulSet, DaemonSet, Job, a
//     ReplicaSet of its own, a custom resource);
//   - a pod without a controller is its own workload, of kind Pod.
//
// The answer has one value per pod, so the series it labels stay bounded by
// the pods on the node.
func PodWorkloadOf(pod *corev1.Pod) Workload {
	l := pod.Labels
	switch {
	case l[labelJobSet] != "":
		return Workload{"JobSet", l[labelJobSet]}
	case l[labelLWS] != "":
		return Workload{"LeaderWorkerSet", l[labelLWS]}
	case l[labelKubeflowJob] != "":
		return Workload{kubeflowKind(pod), l[labelKubeflowJob]}
	case l[labelRayOriginKind] != "" && l[labelRayOriginName] != "":
		return Workload{l[labelRayOriginKind], l[labelRayOriginName]}
	case l[labelRayCluster] != "":
		return Workload{"RayCluster", l[labelRayCluster]}
	}
	owner := metav1.GetControllerOfNoCopy(pod)
	if owner == nil {
		return Workload{"Pod", pod.Name}
	}
	switch owner.Kind {
	case "ReplicaSet":
		if h := l[labelPodTemplateHash]; h != "" {
			// <name>-<hash>, compared without building "-"+hash per scrape.
			if name, ok := strings.CutSuffix(owner.Name, h); ok && len(name) > 1 && name[len(name)-1] == '-' {
				return Workload{"Deployment", name[:len(name)-1]}
			}
		}
	case "Job":
		if name, ok := cronJobOf(owner.Name); ok {
			return Workload{"CronJob", name}
		}
	}
	return Workload{owner.Kind, owner.Name}
}

// kubeflowKind is the kind of a Kubeflow training job's pod: its
// controller's, when that is a kubeflow.org object (training operator v1
// owns the pods directly), else the operator-name label's.
func kubeflowKind(pod *corev1.Pod) string {
	if o := metav1.GetControllerOfNoCopy(pod); o != nil {
		if group, _, _ := strings.Cut(o.APIVersion, "/"); group == kubeflowGroup {
			return o.Kind
		}
	}
	op := strings.TrimSuffix(pod.Labels[labelKubeflowOp], "-controller")
	if k, ok := kubeflowKinds[op]; ok {
		return k
	}
	return "KubeflowJob"
}

// CronJob Jobs are named <cronjob>-<scheduled time in minutes since 1970>.
// The bounds are 2020 and 2100: a name ending in an index, a date
// (20261202 is below 2020 in minutes) or Unix seconds is a Job of its own.
const (
	cronMinuteMin = 1_577_836_800 / 60 // 2020-01-01
	cronMinuteMax = 4_102_444_800 / 60 // 2100-01-01
)

func cronJobOf(job string) (string, bool) {
	i := strings.LastIndexByte(job, '-')
	if i <= 0 {
		return "", false
	}
	n, err := strconv.ParseInt(job[i+1:], 10, 64)
	if err != nil || n < cronMinuteMin || n > cronMinuteMax || job[i+1] == '0' {
		return "", false
	}
	return job[:i], true
}
