{{/* Names and labels. */}}
{{- define "bcw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bcw.fullname" -}}
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

{{- define "bcw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bcw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bcw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bcw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "bcw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bcw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bcw.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the providers file, and the key (= file name) inside it. */}}
{{- define "bcw.providersConfigMap" -}}
{{- default (printf "%s-providers" (include "bcw.fullname" .)) .Values.providers.existingConfigMap }}
{{- end }}

{{- define "bcw.providersKey" -}}
{{- if .Values.providers.existingConfigMap }}{{ .Values.providers.existingConfigMapKey }}{{ else }}providers.yaml{{ end }}
{{- end }}

{{- define "bcw.providersDir" -}}/etc/batch-cancel-worker{{- end }}

{{/* The drain time the pod gets: the worker's shutdown grace, rounded up, plus a margin. */}}
{{- define "bcw.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.shutdownGraceSeconds | int64) .Values.terminationGraceMarginSeconds }}
{{- end }}

{{/* Replica bounds: maxReplicas defaults to the partition count and may exceed it only on request. */}}
{{- define "bcw.maxReplicas" -}}
{{- $partitions := .Values.kafka.commandsTopicPartitions | int64 }}
{{- $max := $partitions }}
{{- if not (kindIs "invalid" .Values.autoscaling.maxReplicas) }}
{{- $max = .Values.autoscaling.maxReplicas | int64 }}
{{- end }}
{{- if and (gt $max $partitions) (not .Values.kafka.allowIdleConsumers) }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds kafka.commandsTopicPartitions (%d): extra consumers get no partition; set kafka.allowIdleConsumers=true to allow it" $max $partitions) }}
{{- end }}
{{- if lt $max (.Values.autoscaling.minReplicas | int64) }}
{{- fail (printf "autoscaling.maxReplicas (%d) is below autoscaling.minReplicas (%d)" $max (.Values.autoscaling.minReplicas | int64)) }}
{{- end }}
{{- $max }}
{{- end }}

{{/* An environment value: numbers without Go's float formatting (8388608, not 8.388608e+06). */}}
{{- define "bcw.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . | toString | quote }}
{{- else }}{{ toString . | quote }}
{{- end }}
{{- end }}
