package dashboards_test

import (
	"os"
	"path/filepath"
	"testing"
)

// ownerRuleFile writes a stand-in for kube-state-metrics, which the workload
// roll-ups of recording.rules.yaml join with and the simulated node lacks:
// kubernetes-mixin's namespace_workload_pod:kube_pod_owner:relabel for every
// pod with a GPU request, its workload the pod's name less its last dash
// (trainer-0 of StatefulSet trainer), as kube-state-metrics gives it.
func ownerRuleFile(t *testing.T, dir string) string {
	t.Helper()
	rules := `groups:
  - name: kube-state-metrics-stand-in
    interval: 1s
    rules:
      - record: namespace_workload_pod:kube_pod_owner:relabel
        expr: |
          label_replace(
            label_replace(max by (namespace, pod) (kube_gpu_pod_requests), "workload", "$1", "pod", "(.+)-[^-]+"),
            "workload_type", "statefulset", "", "")
`
	path := filepath.Join(dir, "rules-owner.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
