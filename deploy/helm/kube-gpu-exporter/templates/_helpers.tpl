{{/* Chart name. */}}
{{- define "kube-gpu-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, unless it lacks the chart name. */}}
{{- define "kube-gpu-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-gpu-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "kube-gpu-exporter.labels" -}}
helm.sh/chart: {{ include "kube-gpu-exporter.chart" . }}
{{ include "kube-gpu-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: kube-gpu-exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kube-gpu-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-gpu-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-gpu-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-gpu-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-gpu-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when a web configuration file is passed to the exporter. */}}
{{- define "kube-gpu-exporter.webConfig.enabled" -}}
{{- if or .Values.webConfig.existingSecret .Values.webConfig.config }}true{{ end }}
{{- end }}

{{- define "kube-gpu-exporter.webConfig.secretName" -}}
{{- default (printf "%s-web-config" (include "kube-gpu-exporter.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{- define "kube-gpu-exporter.webConfig.key" -}}
{{- if .Values.webConfig.existingSecret }}{{ .Values.webConfig.existingSecretKey }}{{ else }}web-config.yml{{ end }}
{{- end }}

{{/* "true" when the exporter serves HTTPS. */}}
{{- define "kube-gpu-exporter.tls" -}}
{{- if include "kube-gpu-exporter.webConfig.enabled" . }}
{{- if or .Values.webConfig.tls (hasKey .Values.webConfig.config "tls_server_config") }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the exporter requires basic auth. */}}
{{- define "kube-gpu-exporter.basicAuth" -}}
{{- if include "kube-gpu-exporter.webConfig.enabled" . }}
{{- if or .Values.webConfig.basicAuth (hasKey .Values.webConfig.config "basic_auth_users") }}true{{ end }}
{{- end }}
{{- end }}

{{- define "kube-gpu-exporter.scheme" -}}
{{- if include "kube-gpu-exporter.tls" . }}https{{ else }}http{{ end }}
{{- end }}

{{/* A probe: GET / (the landing page), or a TCP check behind basic auth. */}}
{{- define "kube-gpu-exporter.probe" -}}
{{- if include "kube-gpu-exporter.basicAuth" .root }}
tcpSocket:
  port: metrics
{{- else }}
httpGet:
  path: /
  port: metrics
  scheme: {{ include "kube-gpu-exporter.scheme" .root | upper }}
{{- end }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/* The ServiceMonitor / PodMonitor endpoint fields shared by both. */}}
{{- define "kube-gpu-exporter.scrapeEndpoint" -}}
path: {{ .root.Values.exporter.telemetryPath }}
scheme: {{ include "kube-gpu-exporter.scheme" .root }}
{{- with .monitor.interval }}
interval: {{ . }}
{{- end }}
{{- with .monitor.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
# The exporter's namespace, pod, container and node labels describe the GPU
# workloads, not the exporter: keep them rather than exported_*.
honorLabels: true
{{- with .monitor.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .monitor.basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
relabelings:
  # up and the exporter's own metrics get the node the exporter runs on.
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  {{- with .monitor.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .monitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
GOMEMLIMIT, so that the Go runtime collects harder before the container's
memory limit rather than being killed at it: "auto" is 90% of
resources.limits.memory when that is in Mi or Gi, and nothing otherwise.
*/}}
{{- define "kube-gpu-exporter.goMemLimit" -}}
{{- $set := .Values.exporter.goMemLimit | toString -}}
{{- if eq $set "auto" -}}
{{- $limit := dig "limits" "memory" "" (.Values.resources | default dict) | toString -}}
{{- $mib := 0 -}}
{{- if hasSuffix "Mi" $limit -}}
{{- $mib = trimSuffix "Mi" $limit | int -}}
{{- else if hasSuffix "Gi" $limit -}}
{{- $mib = mul (trimSuffix "Gi" $limit | int) 1024 -}}
{{- end -}}
{{- if gt $mib 0 -}}
- name: GOMEMLIMIT
  value: {{ printf "%dMiB" (div (mul $mib 9) 10) | quote }}
{{- end -}}
{{- else if $set -}}
- name: GOMEMLIMIT
  value: {{ $set | quote }}
{{- end -}}
{{- end -}}
