package deploy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

func TestHelmLint(t *testing.T) {
	helm := tooltest.Require(t, "helm")
	run(t, helm, "lint", "--strict", chartDir)
	run(t, helm, "lint", "--strict", chartDir, "--values", allFeatures)
}

func TestHelmTemplateDefaults(t *testing.T) {
	objs := helmTemplate(t)
	want := []string{
		"ClusterRole/kube-gpu-exporter", "ClusterRoleBinding/kube-gpu-exporter", "DaemonSet/kube-gpu-exporter",
		"Service/kube-gpu-exporter", "ServiceAccount/kube-gpu-exporter",
	}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Fatalf("objects = %v, want %v", got, want)
	}

	ds := only[*appsv1.DaemonSet](t, objs)
	pod := ds.Spec.Template.Spec
	checkSecurity(t, ds)
	if pod.HostPID || pod.HostNetwork || pod.HostIPC {
		t.Errorf("host namespaces shared by default: pid %v network %v ipc %v", pod.HostPID, pod.HostNetwork, pod.HostIPC)
	}
	if pod.RuntimeClassName != nil {
		t.Errorf("runtimeClassName = %q by default", *pod.RuntimeClassName)
	}
	if u := pod.SecurityContext.RunAsUser; u == nil || *u != 0 {
		t.Errorf("runAsUser = %v, want 0 (the kubelet socket is root-only)", u)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		ds.Spec.UpdateStrategy.RollingUpdate == nil || ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("updateStrategy = %+v", ds.Spec.UpdateStrategy)
	}

	c := exporterContainer(t, ds)
	args := strings.Join(c.Args, " ")
	for _, a := range []string{"--web.listen-address=:9871", "--kube.node-name=$(NODE_NAME)",
		"--kubelet.pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", args, a)
		}
	}
	if strings.Contains(args, "--web.config.file") {
		t.Errorf("web config passed by default: %s", args)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME = %+v, want the downward API's spec.nodeName", e)
	}
	if env["NVIDIA_VISIBLE_DEVICES"].Value != "all" || env["NVIDIA_DRIVER_CAPABILITIES"].Value != "utility" {
		t.Errorf("NVIDIA runtime variables: %+v %+v", env["NVIDIA_VISIBLE_DEVICES"], env["NVIDIA_DRIVER_CAPABILITIES"])
	}
	if _, ok := env["LD_LIBRARY_PATH"]; ok {
		t.Error("LD_LIBRARY_PATH set without hostDriver.enabled")
	}
	if _, ok := c.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]; ok {
		t.Error("the exporter must not take a GPU from the workloads")
	}
	if c.Resources.Requests.Cpu().String() != "10m" || c.Resources.Requests.Memory().String() != "40Mi" || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v", c.Resources)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9871 {
		t.Errorf("ports = %+v", c.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/" || p.HTTPGet.Port.String() != "metrics" || p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s probe = %+v, want GET / on port metrics over HTTP", name, p)
		}
	}

	// The pod-resources directory from the host, read-only.
	mount := volumeMount(c, "pod-resources")
	vol := volume(pod, "pod-resources")
	if mount == nil || vol == nil || vol.HostPath == nil ||
		vol.HostPath.Path != "/var/lib/kubelet/pod-resources" || mount.MountPath != "/var/lib/kubelet/pod-resources" || !mount.ReadOnly {
		t.Errorf("pod-resources mount %+v volume %+v", mount, vol)
	}
	// The host's /proc, read-only, for per-process attribution of shared GPUs.
	proc := volumeMount(c, "host-proc")
	procVol := volume(pod, "host-proc")
	if proc == nil || procVol == nil || procVol.HostPath == nil || procVol.HostPath.Path != "/proc" || proc.MountPath != "/host/proc" || !proc.ReadOnly {
		t.Errorf("host-proc mount %+v volume %+v", proc, procVol)
	}
	if !slices.Contains(c.Args, "--path.procfs=/host/proc") {
		t.Errorf("args %v lack --path.procfs=/host/proc", c.Args)
	}
	if len(pod.Volumes) != 2 {
		t.Errorf("volumes = %+v, want only pod-resources and host-proc by default", pod.Volumes)
	}

	// Scheduling: GPU node labels ORed, GPU taints tolerated.
	terms := pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	var keys []string
	for _, term := range terms {
		if len(term.MatchExpressions) != 1 {
			t.Errorf("term %+v: want one expression per term so that the terms OR", term)
			continue
		}
		keys = append(keys, term.MatchExpressions[0].Key)
	}
	if !slices.Equal(keys, []string{"nvidia.com/gpu.present", "accelerator", "cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator"}) {
		t.Errorf("node affinity keys = %v", keys)
	}
	wantTolerations := []corev1.Toleration{
		{Key: "sku", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
		{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
	}
	for _, w := range wantTolerations {
		if !slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool { return reflect.DeepEqual(t, w) }) {
			t.Errorf("tolerations %+v lack %+v", pod.Tolerations, w)
		}
	}

	checkRBAC(t, objs, false)
	if slices.Contains(c.Args, "--dra.enabled") {
		t.Errorf("DRA enabled by default: %v", c.Args)
	}

	svc := only[*corev1.Service](t, objs)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" ||
		svc.Spec.Ports[0].Port != 9871 || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("service = %+v", svc.Spec)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, ds.Spec.Selector.MatchLabels) {
		t.Errorf("service selector %v != daemonset selector %v", svc.Spec.Selector, ds.Spec.Selector.MatchLabels)
	}
	sa := only[*corev1.ServiceAccount](t, objs)
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("pod runs as %q, chart creates %q", pod.ServiceAccountName, sa.Name)
	}
}

func TestHelmTemplateAllFeatures(t *testing.T) {
	objs := helmTemplate(t, "--values", allFeatures)
	for _, k := range []string{"ServiceMonitor/kube-gpu-exporter", "PodMonitor/kube-gpu-exporter", "PrometheusRule/kube-gpu-exporter",
		"Secret/kube-gpu-exporter-web-config"} {
		if !slices.Contains(kinds(objs), k) {
			t.Errorf("%s not rendered: %v", k, kinds(objs))
		}
	}

	ds := only[*appsv1.DaemonSet](t, objs)
	pod := ds.Spec.Template.Spec
	checkSecurity(t, ds)
	if !pod.HostPID {
		t.Error("hostPID=true not applied")
	}
	if pod.RuntimeClassName == nil || *pod.RuntimeClassName != "nvidia" {
		t.Errorf("runtimeClassName = %v", pod.RuntimeClassName)
	}
	c := exporterContainer(t, ds)
	if !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("image %q does not use the digest", c.Image)
	}

	// Host driver library: mounted as a file under the LD_LIBRARY_PATH directory.
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	m, v := volumeMount(c, "nvidia-driver"), volume(pod, "nvidia-driver")
	if m == nil || v == nil || v.HostPath == nil || v.HostPath.Path != "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1" ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFile ||
		m.MountPath != env["LD_LIBRARY_PATH"]+"/libnvidia-ml.so.1" || !m.ReadOnly {
		t.Errorf("driver mount %+v volume %+v LD_LIBRARY_PATH %q", m, v, env["LD_LIBRARY_PATH"])
	}

	// Web configuration: the Secret's file is what --web.config.file names.
	secret := only[*corev1.Secret](t, objs)
	wc := volume(pod, "web-config")
	wm := volumeMount(c, "web-config")
	if wc == nil || wc.Secret == nil || wc.Secret.SecretName != secret.Name || wm == nil || !wm.ReadOnly {
		t.Fatalf("web-config volume %+v mount %+v", wc, wm)
	}
	var file string
	for k := range secret.StringData {
		file = wm.MountPath + "/" + k
	}
	if !slices.Contains(c.Args, "--web.config.file="+file) {
		t.Errorf("args %v lack --web.config.file=%s", c.Args, file)
	}
	if !strings.Contains(secret.StringData["web-config.yml"], "tls_server_config") {
		t.Errorf("web config = %q", secret.StringData["web-config.yml"])
	}
	// Basic auth is on: a GET / would get 401, so the probes check the port.
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.TCPSocket == nil || p.HTTPGet != nil {
			t.Errorf("%s probe = %+v, want a TCP check", name, p)
		}
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/scheme"] != "https" || a["checksum/web-config"] == "" {
		t.Errorf("pod annotations = %v", a)
	}

	checkRBAC(t, objs, true)
	if !slices.Contains(c.Args, "--dra.enabled") {
		t.Errorf("dra.enabled: args %v lack --dra.enabled", c.Args)
	}

	sm := only[*serviceMonitor](t, objs)
	pm := only[*podMonitor](t, objs)
	for name, eps := range map[string][]scrapeEndpoint{"ServiceMonitor": sm.Spec.Endpoints, "PodMonitor": pm.Spec.PodMetricsEndpoints} {
		if len(eps) != 1 {
			t.Fatalf("%s endpoints = %+v", name, eps)
		}
		ep := eps[0]
		if ep.Port != "metrics" || ep.Path != "/metrics" || ep.Scheme != "https" || !ep.HonorLabels || ep.TLSConfig == nil {
			t.Errorf("%s endpoint = %+v", name, ep)
		}
		if len(ep.Relabelings) == 0 || ep.Relabelings[0].TargetLabel != "node" {
			t.Errorf("%s relabelings = %+v, want node first", name, ep.Relabelings)
		}
	}
	if sm.Labels["release"] != "kube-prometheus-stack" || sm.Spec.Endpoints[0].BasicAuth == nil {
		t.Errorf("ServiceMonitor labels %v basicAuth %+v", sm.Labels, sm.Spec.Endpoints[0].BasicAuth)
	}
	if !reflect.DeepEqual(sm.Spec.Selector.MatchLabels, ds.Spec.Selector.MatchLabels) ||
		!reflect.DeepEqual(pm.Spec.Selector.MatchLabels, ds.Spec.Selector.MatchLabels) {
		t.Errorf("monitor selectors %v %v, daemonset %v", sm.Spec.Selector.MatchLabels, pm.Spec.Selector.MatchLabels, ds.Spec.Selector.MatchLabels)
	}
	// jobLabel names a label the selected objects carry, whose value the alerts' job matcher accepts.
	svc := only[*corev1.Service](t, objs)
	if job := svc.Labels[sm.Spec.JobLabel]; !strings.Contains(job, "kube-gpu-exporter") {
		t.Errorf("ServiceMonitor job would be %q", job)
	}
	if job := ds.Spec.Template.Labels[pm.Spec.JobLabel]; !strings.Contains(job, "kube-gpu-exporter") {
		t.Errorf("PodMonitor job would be %q", job)
	}

	// PrometheusRule: the rule files, plus the extra alert labels.
	pr := only[*prometheusRule](t, objs)
	var want []ruleGroup
	for _, f := range []string{"recording.rules.yaml", "chargeback.rules.yaml", "opencost.rules.yaml", "alerts.rules.yaml"} {
		for _, g := range readRules(t, filepath.Join(rulesDir, f)).Groups {
			for i := range g.Rules {
				if g.Rules[i].Alert != "" {
					g.Rules[i].Labels["team"] = "ml-platform"
				}
			}
			want = append(want, g)
		}
	}
	if !reflect.DeepEqual(pr.Spec.Groups, want) {
		t.Errorf("PrometheusRule groups differ from deploy/prometheus:\n got %+v\nwant %+v", pr.Spec.Groups, want)
	}

	// prometheus-adapter rules: the file as it is, in the adapter's namespace.
	var cms []*corev1.ConfigMap
	adapter := 0
	for _, cm := range all[*corev1.ConfigMap](objs) {
		if _, ok := cm.Data["config.yaml"]; !ok {
			cms = append(cms, cm)
			continue
		}
		adapter++
		src, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus-adapter", "rules.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["config.yaml"] != strings.TrimRight(string(src), "\n") || cm.Namespace != "monitoring" {
			t.Errorf("ConfigMap %s in %s: config.yaml differs from deploy/prometheus-adapter/rules.yaml", cm.Name, cm.Namespace)
		}
	}
	if adapter != 1 {
		t.Errorf("%d prometheus-adapter ConfigMaps, want 1", adapter)
	}

	// Dashboards: one ConfigMap per JSON file, for Grafana's sidecar.
	jsons, _ := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	if len(cms) != len(jsons) {
		t.Errorf("%d dashboard ConfigMaps for %d dashboards", len(cms), len(jsons))
	}
	for _, j := range jsons {
		src, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, cm := range cms {
			if d, ok := cm.Data[filepath.Base(j)]; ok {
				found = true
				if d != strings.TrimRight(string(src), "\n") {
					t.Errorf("ConfigMap %s: %s differs from the source", cm.Name, filepath.Base(j))
				}
				if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" || cm.Annotations["grafana_folder"] != "GPU" {
					t.Errorf("ConfigMap %s: labels %v annotations %v namespace %s", cm.Name, cm.Labels, cm.Annotations, cm.Namespace)
				}
			}
		}
		if !found {
			t.Errorf("no ConfigMap holds %s", filepath.Base(j))
		}
	}
}

// The PrometheusRule the chart renders is valid for promtool too.
func TestHelmPrometheusRulePassesPromtool(t *testing.T) {
	promtool := tooltest.Require(t, "promtool")
	pr := only[*prometheusRule](t, helmTemplate(t, "--set", "prometheusRule.enabled=true"))
	// Recording rules, workload roll-ups, chargeback rules, GPU alerts, GPU
	// health alerts, exporter alerts.
	if len(pr.Spec.Groups) != 6 {
		t.Errorf("groups = %d, want 6", len(pr.Spec.Groups))
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	writeYAML(t, f, pr.Spec)
	run(t, promtool, "check", "rules", f)

	alertsOnly := only[*prometheusRule](t, helmTemplate(t, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.recordingRules=false", "--set", "chargeback.rules=false"))
	for _, g := range alertsOnly.Spec.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("recording rule %s rendered with recordingRules=false", r.Record)
			}
		}
	}
}

func TestHelmTLSWithoutBasicAuth(t *testing.T) {
	objs := helmTemplate(t,
		"--set", "webConfig.config.tls_server_config.cert_file=/etc/kube-gpu-exporter/tls/tls.crt",
		"--set", "webConfig.config.tls_server_config.key_file=/etc/kube-gpu-exporter/tls/tls.key",
		"--set", "webConfig.tlsSecret=exporter-tls", "--set", "serviceMonitor.enabled=true")
	c := exporterContainer(t, only[*appsv1.DaemonSet](t, objs))
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Path != "/" {
			t.Errorf("%s probe = %+v, want GET / over HTTPS", name, p)
		}
	}
	if s := only[*serviceMonitor](t, objs).Spec.Endpoints[0].Scheme; s != "https" {
		t.Errorf("ServiceMonitor scheme = %q", s)
	}

	// An existing Secret: nothing rendered, the flag names its key.
	objs = helmTemplate(t, "--set", "webConfig.existingSecret=my-web-config", "--set", "webConfig.existingSecretKey=config.yaml",
		"--set", "webConfig.tls=true", "--set", "podMonitor.enabled=true")
	if len(all[*corev1.Secret](objs)) != 0 {
		t.Error("a Secret rendered although webConfig.existingSecret is set")
	}
	ds := only[*appsv1.DaemonSet](t, objs)
	c = exporterContainer(t, ds)
	if v := volume(ds.Spec.Template.Spec, "web-config"); v == nil || v.Secret.SecretName != "my-web-config" ||
		!slices.Contains(c.Args, "--web.config.file=/etc/kube-gpu-exporter/web-config/config.yaml") {
		t.Errorf("existing secret: volume %+v args %v", v, c.Args)
	}
	if s := only[*podMonitor](t, objs).Spec.PodMetricsEndpoints[0].Scheme; s != "https" {
		t.Errorf("PodMonitor scheme = %q", s)
	}
}

func TestHelmRunAsNonRoot(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "runAsNonRoot.enabled=true"))
	sc := ds.Spec.Template.Spec.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.SeccompProfile == nil {
		t.Errorf("pod securityContext = %+v", sc)
	}
	checkSecurity(t, ds)
}

func TestHelmKubernetesAPIDisabled(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "exporter.kubeEnabled=false"))
	c := exporterContainer(t, ds)
	if !slices.Contains(c.Args, "--no-kube.enabled") {
		t.Errorf("args %v lack --no-kube.enabled", c.Args)
	}
	if a := ds.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("service account token mounted although the API is not used")
	}
}

// migMonitor.enabled=true asks the NVIDIA container toolkit for MIG-monitor
// privilege: the environment variable and the one capability it requires,
// nothing else loosened.
func TestHelmMIGMonitor(t *testing.T) {
	def := exporterContainer(t, only[*appsv1.DaemonSet](t, helmTemplate(t)))
	c := exporterContainer(t, only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "migMonitor.enabled=true")))
	env := func(c corev1.Container) string {
		for _, e := range c.Env {
			if e.Name == "NVIDIA_MIG_MONITOR_DEVICES" {
				return e.Value
			}
		}
		return ""
	}
	if env(def) != "" || env(c) != "all" {
		t.Errorf("NVIDIA_MIG_MONITOR_DEVICES = %q by default, %q enabled; want unset and all", env(def), env(c))
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"SYS_ADMIN"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("capabilities = %+v, want drop ALL, add SYS_ADMIN", sc)
	}
	if *sc.Privileged || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext loosened beyond the capability: %+v", sc)
	}
}

// hostNetwork=true puts the pod on the node's network and keeps cluster DNS.
func TestHelmHostNetwork(t *testing.T) {
	pod := only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "hostNetwork=true")).Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork=true: hostNetwork %v, dnsPolicy %q", pod.HostNetwork, pod.DNSPolicy)
	}
}

func TestHelmPerProcessModes(t *testing.T) {
	off := exporterContainer(t, only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "perProcess.enabled=false")))
	if !slices.Contains(off.Args, "--no-nvml.per-process") || volumeMount(off, "host-proc") != nil {
		t.Errorf("perProcess off: args %v, host-proc mount %v", off.Args, volumeMount(off, "host-proc"))
	}
	ds := only[*appsv1.DaemonSet](t, helmTemplate(t, "--set", "hostPID=true", "--set", "perProcess.hostProc.enabled=false"))
	pid := exporterContainer(t, ds)
	if !ds.Spec.Template.Spec.HostPID || volume(ds.Spec.Template.Spec, "host-proc") != nil || slices.ContainsFunc(pid.Args, func(a string) bool { return strings.HasPrefix(a, "--path.procfs") }) {
		t.Errorf("hostPID mode: hostPID %v, args %v", ds.Spec.Template.Spec.HostPID, pid.Args)
	}
}

// A misspelt or misplaced value fails: values.schema.json closes every object
// the chart owns.
func TestHelmSchemaRejectsTypos(t *testing.T) {
	helm := tooltest.Require(t, "helm")
	for _, set := range []string{
		"tolerationz=x",
		"exporter.logLevl=debug",
		"exporter.logLevel=verbose",
		"serviceMonitor.enabeld=true",
		"webConfig.config.tls_server_confg.cert_file=x",
		"hostDriver.type=Socket",
		"podResources.readonly=false",
		"image.pullPolicy=Sometimes",
		"extraArgs[0]=nvml.poll-interval=1s",
		"exporter.kubeletMaxRecvMsgSize=67108864",
	} {
		out, err := runErr(helm, "template", "x", chartDir, "--set", set)
		if err == nil {
			t.Errorf("--set %s: rendered without error", set)
		} else if !strings.Contains(err.Error(), "schema") {
			t.Errorf("--set %s: failed, but not on the schema: %v", set, err)
		}
		_ = out
	}
}

// With no dashboard JSON (e.g. dashboards/ emptied), enabling dashboards
// renders nothing. The chart is copied with its links resolved, as `helm
// package` does.
func TestHelmNoDashboards(t *testing.T) {
	helm := tooltest.Require(t, "helm")
	dir := filepath.Join(t.TempDir(), "kube-gpu-exporter")
	copyTree(t, chartDir, dir)
	if err := os.RemoveAll(filepath.Join(dir, "files", "dashboards")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "files", "dashboards"), 0o755); err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, run(t, helm, "template", "x", dir, "--set", "grafanaDashboards.enabled=true"))
	if n := len(all[*corev1.ConfigMap](objs)); n != 0 {
		t.Errorf("%d ConfigMaps rendered without dashboards", n)
	}
}

// The packaged chart carries the rule files and dashboards (the links are
// followed) but not the rule tests nor the dashboards' Go sources.
func TestHelmPackage(t *testing.T) {
	helm := tooltest.Require(t, "helm")
	dir := t.TempDir()
	run(t, helm, "package", chartDir, "--destination", dir)
	tgz := filepath.Join(dir, "kube-gpu-exporter-0.1.0.tgz")
	names := tarNames(t, tgz)
	for _, want := range []string{"kube-gpu-exporter/files/prometheus/alerts.rules.yaml", "kube-gpu-exporter/files/prometheus/recording.rules.yaml",
		"kube-gpu-exporter/files/prometheus-adapter/rules.yaml",
		"kube-gpu-exporter/values.schema.json"} {
		if !slices.Contains(names, want) {
			t.Errorf("package lacks %s", want)
		}
	}
	for _, n := range names {
		if strings.Contains(n, "/tests/") || strings.HasSuffix(n, ".go") {
			t.Errorf("package holds %s", n)
		}
	}
	// The package renders like the directory.
	objs := decodeAll(t, run(t, helm, "template", "kube-gpu-exporter", tgz, "--namespace", "kube-gpu-exporter", "--values", allFeatures))
	if !reflect.DeepEqual(kinds(objs), kinds(helmTemplate(t, "--values", allFeatures))) {
		t.Errorf("packaged chart renders %v", kinds(objs))
	}
}

// --- helpers

func exporterContainer(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "exporter" {
		t.Fatalf("containers = %+v", cs)
	}
	if len(ds.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("init containers = %+v", ds.Spec.Template.Spec.InitContainers)
	}
	return cs[0]
}

func volumeMount(c corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// checkSecurity asserts what must hold whatever the values: no privilege, no
// capability, no escalation, a read-only root, the runtime's seccomp profile.
func checkSecurity(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	pod := ds.Spec.Template.Spec
	c := exporterContainer(t, ds)
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no container securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged is not false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities = %+v, want drop ALL and add nothing", sc.Capabilities)
	}
	if sc.Capabilities != nil && slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") {
		t.Error("SYS_ADMIN added")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod.SecurityContext != nil {
		seccomp = pod.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", seccomp)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q", pod.PriorityClassName)
	}
	if pod.HostNetwork || pod.HostIPC {
		t.Error("host network or IPC shared")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/" {
			t.Errorf("volume %s mounts the host's root", v.Name)
		}
	}
}

// checkRBAC: read-only access to pods and nodes, plus resourceslices with DRA.
func checkRBAC(t *testing.T, objs []object, dra bool) {
	t.Helper()
	cr := only[*rbacv1.ClusterRole](t, objs)
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"list", "watch"}}}
	if dra {
		want = append(want, rbacv1.PolicyRule{APIGroups: []string{"resource.k8s.io"}, Resources: []string{"resourceslices", "devicetaintrules"}, Verbs: []string{"list", "watch"}})
	}
	if !reflect.DeepEqual(cr.Rules, want) {
		t.Errorf("ClusterRole rules = %+v, want %+v", cr.Rules, want)
	}
	crb := only[*rbacv1.ClusterRoleBinding](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 ||
		crb.Subjects[0].Kind != "ServiceAccount" || crb.Subjects[0].Name != sa.Name || crb.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("ClusterRoleBinding = %+v", crb)
	}
	for _, o := range objs {
		if o.Kind == "Role" || o.Kind == "RoleBinding" {
			t.Errorf("unexpected %s %s", o.Kind, o.Name)
		}
	}
}
