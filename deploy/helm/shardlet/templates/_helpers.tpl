{{/* The chart name, shortened to a DNS label. */}}
{{- define "shardlet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, with the chart name unless it already holds it. */}}
{{- define "shardlet.fullname" -}}
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

{{/* Cluster-scoped objects are shared by every release: name them after release and namespace. */}}
{{- define "shardlet.clusterName" -}}
{{- printf "%s-%s" (include "shardlet.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardlet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardlet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardlet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shardlet.labels" -}}
helm.sh/chart: {{ include "shardlet.chart" . }}
{{ include "shardlet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "shardlet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shardlet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when shardlet runs shard actors on Ray (more than one shard, or an existing Ray cluster). */}}
{{- define "shardlet.sharded" -}}
{{- if or (gt (int .Values.shards) 1) .Values.ray.address }}true{{ else }}false{{ end }}
{{- end }}

{{/* "true" when the pod starts its own Ray head. */}}
{{- define "shardlet.inPodRay" -}}
{{- if and (gt (int .Values.shards) 1) (not .Values.ray.address) }}true{{ else }}false{{ end }}
{{- end }}

{{/* The `shardlet` arguments: global flags, then `run` and its flags. */}}
{{- define "shardlet.args" -}}
- {{ printf "--log-format=%s" .Values.log.format | quote }}
- {{ printf "--log-level=%s" .Values.log.level | quote }}
- run
- --shards={{ int .Values.shards }}
{{- with .Values.ray.address }}
- {{ printf "--ray-address=%s" . | quote }}
{{- end }}
{{- if eq (include "shardlet.sharded" .) "true" }}
- {{ printf "--shard-cpus=%v" .Values.ray.shardCpus | quote }}
{{- end }}
{{- if eq .Values.nodes.select "annotation" }}
- {{ printf "--node-annotation-selector=%s" (required "nodes.annotationSelector is required with nodes.select=annotation" .Values.nodes.annotationSelector) | quote }}
{{- with .Values.nodes.labelSelector }}
- {{ printf "--node-label-selector=%s" . | quote }}
{{- end }}
{{- else if eq .Values.nodes.select "label" }}
- "--node-annotation-selector="
- {{ printf "--node-label-selector=%s" (required "nodes.labelSelector is required with nodes.select=label" .Values.nodes.labelSelector) | quote }}
{{- else if eq .Values.nodes.select "all" }}
- --manage-all-nodes
{{- else }}
{{- fail (printf "nodes.select=%q: must be annotation, label or all" .Values.nodes.select) }}
{{- end }}
- {{ printf "--profile=%s" .Values.profile | quote }}
- --lease-duration={{ int .Values.leaseDuration }}
{{- /* the lease holder: the pod's name, so a restarted container takes its own leases back at
   once, and another replica's only once they expired */}}
- "--id=$(POD_NAME)"
{{- /* nodes advertise the pod's address: the apiserver reaches the kubelet server there (kwok's way) */}}
- "--node-ip=$(POD_IP)"
{{- if .Values.nodeMetrics.enabled }}
- --node-metrics
{{- end }}
- --status-port={{ int .Values.statusPort }}
{{- if eq (include "shardlet.sharded" .) "false" }}
- --metrics-port={{ int .Values.metrics.port }}
- --metrics-addr=0.0.0.0
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
