package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodGPURequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := func(name, n string) corev1.Container {
		c := ctr(name, rl("nvidia.com/gpu", n), nil)
		c.RestartPolicy = &always
		return c
	}
	gpu := func(name, n string) corev1.Container { return ctr(name, rl("nvidia.com/gpu", n), nil) }
	limitOnly := func(name, n string) corev1.Container { return ctr(name, nil, rl("nvidia.com/gpu", n)) }
	for _, tc := range []struct {
		name          string
		init, regular []corev1.Container
		want          float64
	}{
		{"init hands over to main", []corev1.Container{gpu("setup", "1")}, []corev1.Container{gpu("main", "1")}, 1},
		{"init larger than main", []corev1.Container{gpu("setup", "4")}, []corev1.Container{gpu("main", "1"), gpu("aux", "1")}, 4},
		{"containers sum", nil, []corev1.Container{gpu("a", "2"), limitOnly("b", "1")}, 3},
		{"sidecar runs beside main", []corev1.Container{sidecar("proxy", "1")}, []corev1.Container{gpu("main", "1")}, 2},
		// The init container after the sidecar runs beside it (1+3); the
		// one before it does not (3).
		{"sidecar before init", []corev1.Container{gpu("first", "3"), sidecar("proxy", "1"), gpu("second", "3")}, []corev1.Container{gpu("main", "1")}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PodGPURequests(testPod("ml", "p", corev1.PodRunning, tc.init, tc.regular), nil)
			if len(got) != 1 || got[0].Request != tc.want || got[0].Resource != "nvidia.com/gpu" || got[0].Vendor != "nvidia" {
				t.Fatalf("PodGPURequests = %+v, want one nvidia.com/gpu entry of %v", got, tc.want)
			}
		})
	}
	if got := PodGPURequests(testPod("ml", "done", corev1.PodSucceeded, nil, []corev1.Container{gpu("main", "1")}), nil); got != nil {
		t.Errorf("terminal pod: %+v", got)
	}
}
