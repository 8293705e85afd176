package node

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

const exporterNamespace = "kube-gpu-exporter"

// deployExporter renders the chart with the test's image and applies it to
// the API server, so that the DaemonSet controller starts the exporter on
// the node with the chart's own securityContext, hostPath mounts,
// ServiceAccount token and RBAC. The pod shares the node's network (no pod
// network here) and reaches the API server at 127.0.0.1 rather than the
// kubernetes Service's ClusterIP, which no kube-proxy serves. It returns
// the exporter's address.
func (n *kubeNode) deployExporter(t *testing.T, extraArgs ...string) string {
	addr := tooltest.FreeAddr(t)
	args := []string{"template", "kube-gpu-exporter", filepath.Join(tooltest.RepoRoot(), "deploy", "helm", "kube-gpu-exporter"),
		"--namespace", exporterNamespace,
		"--set", "namespace.create=true",
		"--set", "image.repository=" + strings.Split(exporterImage, ":")[0],
		"--set", "image.tag=" + strings.Split(exporterImage, ":")[1],
		"--set", "image.pullPolicy=Never",
		"--set", "hostNetwork=true",
		"--set", "dra.enabled=true",
		"--set", "exporter.port=" + port(addr),
		"--set", "podResources.hostPath=" + filepath.Join(n.rootDir, "pod-resources"),
		"--set", "extraEnv[0].name=KUBERNETES_SERVICE_HOST", "--set", "extraEnv[0].value=127.0.0.1",
		"--set-string", "extraEnv[1].name=KUBERNETES_SERVICE_PORT", "--set-string", "extraEnv[1].value=" + port(n.c.Addr),
	}
	for i, a := range extraArgs {
		args = append(args, "--set-string", fmt.Sprintf("extraArgs[%d]=%s", i, a))
	}
	out, err := exec.Command(n.bins["helm"], args...).Output()
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			t.Fatalf("helm template: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("helm template: %v", err)
	}
	n.apply(t, string(out))
	n.waitExporterPod(t, 90*time.Second)
	return "127.0.0.1:" + port(addr)
}

// apply creates every object of a multi-document manifest, Namespaces
// first.
func (n *kubeNode) apply(t *testing.T, manifest string) {
	dyn, err := dynamic.NewForConfig(n.c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(n.c.Client.Discovery()))
	var objs []*unstructured.Unstructured
	for doc := range strings.SplitSeq(manifest, "\n---") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "Namespace" {
			objs = append([]*unstructured.Unstructured{u}, objs...)
		} else {
			objs = append(objs, u)
		}
	}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", gvk.Kind, u.GetName(), err)
		}
	}
}

// exporterPod returns the exporter's pod on the node, if it runs.
func (n *kubeNode) exporterPod() (*corev1.Pod, error) {
	pods, err := n.c.Client.CoreV1().Pods(exporterNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no exporter pod in %s", exporterNamespace)
}

func (n *kubeNode) waitExporterPod(t *testing.T, timeout time.Duration) {
	t.Helper()
	testkit.EventuallyNil(t, timeout, "exporter pod running", func() error {
		p, err := n.exporterPod()
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("%w %s", err, podState(p))
		}
		return nil
	})
}

// podState says why a pod is not running, from its status.
func podState(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	s := string(p.Status.Phase)
	for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := c.State.Waiting; w != nil {
			s += fmt.Sprintf("; %s waiting: %s %s", c.Name, w.Reason, w.Message)
		}
		if x := c.State.Terminated; x != nil {
			s += fmt.Sprintf("; %s terminated: %s %d", c.Name, x.Reason, x.ExitCode)
		}
	}
	return s
}
