{{/* The namespace the chart must be installed into: hosts' Leases live there. */}}
{{- define "bulkhead.namespace" -}}
{{- if ne .Release.Namespace "bulkhead-system" -}}
{{- fail (printf "install Bulkhead into the namespace bulkhead-system (helm install -n bulkhead-system --create-namespace), not %q: the controller reads the hosts' Leases there" .Release.Namespace) -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end -}}

{{- define "bulkhead.labels" -}}
app.kubernetes.io/name: bulkhead
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bulkhead.controller.selector" -}}
app.kubernetes.io/name: bulkhead
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "bulkhead.agent.selector" -}}
app.kubernetes.io/name: bulkhead
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{/* ServiceAccount names are fixed: RBAC subjects and docs name them. */}}
{{- define "bulkhead.controller.serviceAccount" -}}bulkhead-controller{{- end -}}
{{- define "bulkhead.agent.serviceAccount" -}}bulkhead-node-agent{{- end -}}

{{- define "bulkhead.image" -}}
{{- $tag := .image.tag | default .root.Values.imageTag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
