package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodWorkloadOf(t *testing.T) {
	controller := func(apiVersion, kind, name string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{
			{APIVersion: "v1", Kind: "Node", Name: "not-a-controller"},
			{APIVersion: apiVersion, Kind: kind, Name: name, Controller: &yes},
		}
	}
	owner := func(apiVersion, kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name}}
	}
	cases := []struct {
		name   string
		pod    string
		labels map[string]string
		owners []metav1.OwnerReference
		want   Workload
	}{
		{name: "bare pod", pod: "debug", want: Workload{"Pod", "debug"}},
		{name: "owner that is not a controller", pod: "p", owners: owner("apps/v1", "ReplicaSet", "web-abc"), want: Workload{"Pod", "p"}},
		{
			name: "deployment", pod: "vllm-7d9c5b8f4-x2x9z",
			labels: map[string]string{"pod-template-hash": "7d9c5b8f4", "app": "vllm"},
			owners: controller("apps/v1", "ReplicaSet", "vllm-7d9c5b8f4"), want: Workload{"Deployment", "vllm"},
		},
		{
			name: "replicaset of its own", pod: "rs-x",
			owners: controller("apps/v1", "ReplicaSet", "rs"), want: Workload{"ReplicaSet", "rs"},
		},
		{
			name: "replicaset whose name does not end in the hash", pod: "rs-x",
			labels: map[string]string{"pod-template-hash": "abc"},
			owners: controller("apps/v1", "ReplicaSet", "rs"), want: Workload{"ReplicaSet", "rs"},
		},
		{name: "statefulset", pod: "db-0", owners: controller("apps/v1", "StatefulSet", "db"), want: Workload{"StatefulSet", "db"}},
		{name: "daemonset", pod: "agent-x", owners: controller("apps/v1", "DaemonSet", "agent"), want: Workload{"DaemonSet", "agent"}},
		{
			name: "job", pod: "train-1-x", labels: map[string]string{"batch.kubernetes.io/job-name": "train-1"},
			owners: controller("batch/v1", "Job", "train-1"), want: Workload{"Job", "train-1"},
		},
		{
			name: "cronjob", pod: "nightly-29561880-x", labels: map[string]string{"batch.kubernetes.io/job-name": "nightly-29561880"},
			owners: controller("batch/v1", "Job", "nightly-29561880"), want: Workload{"CronJob", "nightly"},
		},
		{
			name: "job named with a date", pod: "eval-20261202-x",
			owners: controller("batch/v1", "Job", "eval-20261202"), want: Workload{"Job", "eval-20261202"},
		},
		{
			name: "job named with unix seconds", pod: "run-1796169600-x",
			owners: controller("batch/v1", "Job", "run-1796169600"), want: Workload{"Job", "run-1796169600"},
		},
		{
			name: "jobset", pod: "llama-workers-0-3-x",
			labels: map[string]string{"jobset.sigs.k8s.io/jobset-name": "llama", "batch.kubernetes.io/job-name": "llama-workers-0"},
			owners: controller("batch/v1", "Job", "llama-workers-0"), want: Workload{"JobSet", "llama"},
		},
		{
			name: "leaderworkerset worker", pod: "lws-1-2",
			labels: map[string]string{"leaderworkerset.sigs.k8s.io/name": "lws"},
			owners: controller("apps/v1", "StatefulSet", "lws-1"), want: Workload{"LeaderWorkerSet", "lws"},
		},
		{
			name: "pytorchjob", pod: "bert-worker-1",
			labels: map[string]string{"training.kubeflow.org/job-name": "bert", "training.kubeflow.org/operator-name": "pytorchjob-controller"},
			owners: controller("kubeflow.org/v1", "PyTorchJob", "bert"), want: Workload{"PyTorchJob", "bert"},
		},
		{
			name: "kubeflow job owned by something else", pod: "bert-worker-1",
			labels: map[string]string{"training.kubeflow.org/job-name": "bert", "training.kubeflow.org/operator-name": "tfjob-controller"},
			want:   Workload{"TFJob", "bert"},
		},
		{
			name: "mpi operator launcher", pod: "pi-launcher-x",
			labels: map[string]string{"training.kubeflow.org/job-name": "pi", "training.kubeflow.org/operator-name": "mpi-operator"},
			owners: controller("batch/v1", "Job", "pi-launcher"), want: Workload{"MPIJob", "pi"},
		},
		{
			name: "unknown kubeflow operator", pod: "x",
			labels: map[string]string{"training.kubeflow.org/job-name": "j", "training.kubeflow.org/operator-name": "new-operator"},
			want:   Workload{"KubeflowJob", "j"},
		},
		{
			name: "raycluster", pod: "rc-worker-gpu-x",
			labels: map[string]string{"ray.io/cluster": "rc", "ray.io/node-type": "worker"},
			owners: controller("ray.io/v1", "RayCluster", "rc"), want: Workload{"RayCluster", "rc"},
		},
		{
			name: "rayjob", pod: "job-raycluster-x-worker",
			labels: map[string]string{"ray.io/cluster": "job-raycluster-x", "ray.io/originated-from-crd": "RayJob", "ray.io/originated-from-cr-name": "job"},
			owners: controller("ray.io/v1", "RayCluster", "job-raycluster-x"), want: Workload{"RayJob", "job"},
		},
		{
			name: "custom controller", pod: "x-0",
			owners: controller("example.com/v1", "Notebook", "nb"), want: Workload{"Notebook", "nb"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: tc.pod, Labels: tc.labels, OwnerReferences: tc.owners}}
			if got := PodWorkloadOf(pod); got != tc.want {
				t.Errorf("PodWorkloadOf = %+v, want %+v", got, tc.want)
			}
			// The informer's transform keeps what the answer needs.
			slim, err := podTransform(nil, nil)(pod)
			if err != nil {
				t.Fatal(err)
			}
			if got := PodWorkloadOf(slim.(*corev1.Pod)); got != tc.want {
				t.Errorf("after the transform: %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCronJobOf(t *testing.T) {
	for job, want := range map[string]string{
		"nightly-29561880": "nightly", "a-b-29561880": "a-b", "x-26297280": "x",
		"x-26297279": "", "x-68374081": "", "x-029561880": "", "29561880": "", "-29561880": "", "x-": "", "x-1": "",
	} {
		got, ok := cronJobOf(job)
		if got != want || ok != (want != "") {
			t.Errorf("cronJobOf(%q) = %q, %v; want %q", job, got, ok, want)
		}
	}
}
