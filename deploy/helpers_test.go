package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

var (
	root         = tooltest.RepoRoot()
	chartDir     = filepath.Join(root, "deploy", "helm", "kube-gpu-exporter")
	allFeatures  = filepath.Join(chartDir, "ci", "all-features-values.yaml")
	kustomizeDir = filepath.Join(root, "deploy", "kubernetes")
	rulesDir     = filepath.Join(root, "deploy", "prometheus")
)

// run executes a program and returns its standard output; a failure ends the
// test with the program's standard error.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

func runErr(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// helmTemplate renders the chart as release kube-gpu-exporter in namespace
// kube-gpu-exporter, with extra helm arguments (--set, -f).
func helmTemplate(t *testing.T, args ...string) []object {
	t.Helper()
	helm := tooltest.Require(t, "helm")
	full := append([]string{"template", "kube-gpu-exporter", chartDir, "--namespace", "kube-gpu-exporter"}, args...)
	return decodeAll(t, run(t, helm, full...))
}

// customTypes are the prometheus-operator and Grafana objects the chart
// renders, decoded as strictly as the Kubernetes types.
type object struct {
	Kind, Name, Namespace string
	// Typed is a pointer to the k8s.io/api type or a local CRD type.
	Typed any
	// Raw is the document as JSON.
	Raw []byte
}

func newTyped(kind string) (any, bool) {
	switch kind {
	case "DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "Service":
		return &corev1.Service{}, true
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "Secret":
		return &corev1.Secret{}, true
	case "ConfigMap":
		return &corev1.ConfigMap{}, true
	case "Namespace":
		return &corev1.Namespace{}, true
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	case "ServiceMonitor":
		return &serviceMonitor{}, true
	case "PodMonitor":
		return &podMonitor{}, true
	case "PrometheusRule":
		return &prometheusRule{}, true
	}
	return nil, false
}

// decodeAll splits a multi-document YAML stream and decodes every document
// strictly into its type: an unknown or misplaced field is an error.
func decodeAll(t *testing.T, stream []byte) []object {
	t.Helper()
	objs, err := decodeStream(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("no object rendered")
	}
	return objs
}

func decodeStream(stream []byte) ([]object, error) {
	var objs []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSONStrict(doc) // duplicate keys are errors
		if err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // a document with comments only
		}
		var tm struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal(js, &tm); err != nil {
			return nil, err
		}
		typed, ok := newTyped(tm.Kind)
		if !ok {
			return nil, fmt.Errorf("unexpected kind %q (%s)", tm.Kind, tm.Metadata.Name)
		}
		if err := unmarshalStrict(js, typed); err != nil {
			return nil, fmt.Errorf("%s %s: %w", tm.Kind, tm.Metadata.Name, err)
		}
		objs = append(objs, object{Kind: tm.Kind, Name: tm.Metadata.Name, Namespace: tm.Metadata.Namespace, Typed: typed, Raw: js})
	}
	return objs, nil
}

// unmarshalStrict decodes JSON as the API server does, case-sensitively (a
// hostPid field does not set hostPID), and rejects unknown and duplicate
// fields.
func unmarshalStrict(js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func kinds(objs []object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Kind+"/"+o.Name)
	}
	sort.Strings(ks)
	return ks
}

// only returns the single object of a kind.
func only[T any](t *testing.T, objs []object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.Typed.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, got %d in %v", zero, len(found), kinds(objs))
	}
	return found[0]
}

func all[T any](objs []object) []T {
	var found []T
	for _, o := range objs {
		if v, ok := o.Typed.(T); ok {
			found = append(found, v)
		}
	}
	return found
}

// --- prometheus-operator types (monitoring.coreos.com/v1), the fields the
// chart may render; anything else fails the strict decoding.

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector namespaceSelector    `json:"namespaceSelector"`
		Endpoints         []scrapeEndpoint     `json:"endpoints"`
	} `json:"spec"`
}

type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel            string               `json:"jobLabel"`
		Selector            metav1.LabelSelector `json:"selector"`
		NamespaceSelector   namespaceSelector    `json:"namespaceSelector"`
		PodMetricsEndpoints []scrapeEndpoint     `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type namespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type scrapeEndpoint struct {
	Port              string          `json:"port"`
	Path              string          `json:"path"`
	Scheme            string          `json:"scheme"`
	Interval          string          `json:"interval,omitempty"`
	ScrapeTimeout     string          `json:"scrapeTimeout,omitempty"`
	HonorLabels       bool            `json:"honorLabels"`
	TLSConfig         *safeTLSConfig  `json:"tlsConfig,omitempty"`
	BasicAuth         *basicAuth      `json:"basicAuth,omitempty"`
	Relabelings       []relabelConfig `json:"relabelings,omitempty"`
	MetricRelabelings []relabelConfig `json:"metricRelabelings,omitempty"`
}

type safeTLSConfig struct {
	CA                 *secretOrConfigMap        `json:"ca,omitempty"`
	Cert               *secretOrConfigMap        `json:"cert,omitempty"`
	KeySecret          *corev1.SecretKeySelector `json:"keySecret,omitempty"`
	ServerName         string                    `json:"serverName,omitempty"`
	InsecureSkipVerify *bool                     `json:"insecureSkipVerify,omitempty"`
	MinVersion         string                    `json:"minVersion,omitempty"`
	MaxVersion         string                    `json:"maxVersion,omitempty"`
}

type secretOrConfigMap struct {
	Secret    *corev1.SecretKeySelector    `json:"secret,omitempty"`
	ConfigMap *corev1.ConfigMapKeySelector `json:"configMap,omitempty"`
}

type basicAuth struct {
	Username corev1.SecretKeySelector `json:"username"`
	Password corev1.SecretKeySelector `json:"password"`
}

type relabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

// ruleFile is a Prometheus rule file, and a PrometheusRule's spec.
type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Record      string            `json:"record,omitempty"`
	Alert       string            `json:"alert,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}
