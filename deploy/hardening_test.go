package deploy_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// GOMEMLIMIT follows the container's memory limit (90% of it), so that the
// runtime collects harder before the limit instead of being killed at it.
func TestHelmGoMemLimit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "115MiB"},
		{[]string{"--set", "resources.limits.memory=1Gi"}, "921MiB"},
		{[]string{"--set", "exporter.goMemLimit=200MiB"}, "200MiB"},
		{[]string{"--set", "exporter.goMemLimit="}, ""},
	} {
		c := exporterContainer(t, only[*appsv1.DaemonSet](t, helmTemplate(t, tc.args...)))
		got := ""
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				got = e.Value
			}
		}
		if got != tc.want {
			t.Errorf("%v: GOMEMLIMIT %q, want %q", tc.args, got, tc.want)
		}
	}
}

// Without the Kubernetes API the exporter reads nothing from it: no
// ClusterRole or binding is rendered.
func TestHelmNoRBACWithoutKubernetesAPI(t *testing.T) {
	for _, o := range helmTemplate(t, "--set", "exporter.kubeEnabled=false") {
		if o.Kind == "ClusterRole" || o.Kind == "ClusterRoleBinding" || o.Kind == "Role" || o.Kind == "RoleBinding" {
			t.Errorf("%s %s rendered with exporter.kubeEnabled=false", o.Kind, o.Name)
		}
	}
}

// The optional Namespace carries the privileged Pod Security Standard the
// DaemonSet's hostPath volumes need; by default none is rendered.
func TestHelmNamespaceWithPodSecurityLabel(t *testing.T) {
	if kinds := kinds(helmTemplate(t)); slices.Contains(kinds, "Namespace") || slices.Contains(kinds, "NetworkPolicy") {
		t.Errorf("defaults render %v", kinds)
	}
	ns := only[*corev1.Namespace](t, helmTemplate(t, "--set", "namespace.create=true"))
	if ns.Name != "kube-gpu-exporter" || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s labels %v", ns.Name, ns.Labels)
	}
}

// The optional NetworkPolicy admits only its peers, to the metrics port of
// the exporter's pods.
func TestHelmNetworkPolicy(t *testing.T) {
	objs := helmTemplate(t, "--set", "networkPolicy.enabled=true",
		"--set", "networkPolicy.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring")
	np := only[*networkingv1.NetworkPolicy](t, objs)
	ds := only[*appsv1.DaemonSet](t, objs)
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("policy selects %s=%s, the pods have %v", k, v, ds.Spec.Template.Labels)
		}
	}
	in := np.Spec.Ingress
	if len(in) != 1 || len(in[0].Ports) != 1 || in[0].Ports[0].Port.IntValue() != 9871 ||
		len(in[0].From) != 1 || in[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("ingress %+v", in)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policy types %v", np.Spec.PolicyTypes)
	}
}
