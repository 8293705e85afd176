{{/*
Cost rules of the chargeback group, from chargeback.pricePerGPUHour and
chargeback.pricePerKWh; an empty list when no price is set.

A price per GPU model becomes one term per model, the default a last term
for every other model: PromQL's "or" keeps a series from the first term that
has it, so a model with its own price never takes the default too.
*/}}
{{- define "kube-gpu-exporter.pricedByModel" -}}
{{- $metric := index . 0 }}
{{- $prices := index . 1 }}
{{- $terms := list }}
{{- range $model := keys $prices | sortAlpha }}
{{- if ne $model "default" }}
{{- $terms = append $terms (printf "%s{gpu_model=%s} * %v" $metric (toJson $model) (index $prices $model)) }}
{{- end }}
{{- end }}
{{- if hasKey $prices "default" }}
{{- $terms = append $terms (printf "%s * %v" $metric (index $prices "default")) }}
{{- end }}
{{- join "\nor " $terms }}
{{- end }}

{{- define "kube-gpu-exporter.chargebackCostRules" -}}
{{- $c := .Values.chargeback }}
{{- $rules := list }}
{{- if $c.pricePerGPUHour }}
{{- range $what := list "allocated" "idle" }}
{{- $rules = append $rules (dict "record" (printf "namespace_pod:kube_gpu_%s_gpu_hours_cost:increase1h" $what) "expr" (include "kube-gpu-exporter.pricedByModel" (list (printf "namespace_pod:kube_gpu_%s_gpu_hours:increase1h" $what) $c.pricePerGPUHour))) }}
{{- end }}
{{- end }}
{{- if $c.pricePerKWh }}
{{- $rules = append $rules (dict "record" "namespace_pod:kube_gpu_energy_cost:increase1h" "expr" (printf "namespace_pod:kube_gpu_energy_kwh:increase1h * %v" $c.pricePerKWh)) }}
{{- end }}
{{- range $r := $rules }}
{{- $ns := $r.record | replace "namespace_pod:" "namespace:" }}
{{- $rules = append $rules (dict "record" $ns "expr" (printf "sum by (cluster_name, namespace, gpu_model) (%s)" $r.record)) }}
{{- end }}
{{- if $rules }}
{{- /* GPU-hours and energy together; either price alone still gives a total. */}}
{{- $rules = append $rules (dict "record" "namespace:kube_gpu_cost:increase1h" "expr" "sum by (cluster_name, namespace) ({__name__=~\"namespace:kube_gpu_(allocated_gpu_hours|energy)_cost:increase1h\"})") }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
