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

{{/* The time the pod gets after SIGTERM: the worker's shutdown grace (calls on the wire, follow-state writes),
rounded up, plus a margin for the final commit, producer flush and exit. */}}
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

{{- define "bcw.kafkaSecretDir" -}}/var/run/secrets/kafka{{- end }}

{{/* Kafka security values that only make sense together; fails at install rather than at the pod's start. */}}
{{- define "bcw.validateKafkaSecurity" -}}
{{- $k := .Values.kafka }}
{{- $sasl := has $k.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}
{{- if and $sasl (not $k.saslMechanism) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.saslMechanism" $k.securityProtocol) }}
{{- end }}
{{- if and $k.saslMechanism (not $sasl) }}
{{- fail (printf "kafka.saslMechanism is set but kafka.securityProtocol is %s (use SASL_SSL or SASL_PLAINTEXT)" $k.securityProtocol) }}
{{- end }}
{{- if and $sasl (not $k.existingSecret) }}
{{- fail "SASL needs kafka.existingSecret holding the username and password" }}
{{- end }}
{{- if and $sasl (or (not $k.secretKeys.username) (not $k.secretKeys.password)) }}
{{- fail "SASL needs kafka.secretKeys.username and kafka.secretKeys.password" }}
{{- end }}
{{- $tlsFiles := and $k.existingSecret (or $k.secretKeys.ca $k.secretKeys.cert $k.secretKeys.key) }}
{{- if and $tlsFiles (not (has $k.securityProtocol (list "SSL" "SASL_SSL"))) }}
{{- fail "kafka.secretKeys ca/cert/key are TLS files: use kafka.securityProtocol SSL or SASL_SSL" }}
{{- end }}
{{- if and $k.existingSecret (ne (empty $k.secretKeys.cert) (empty $k.secretKeys.key)) }}
{{- fail "kafka.secretKeys.cert and kafka.secretKeys.key go together (mutual TLS)" }}
{{- end }}
{{- end }}

{{/* Every key the rendered providers file refers to (API keys, command-signing keys, Google service-account
key files, Entra ID client secrets and certificates) must reach the pod:
an env var the chart sets, or a file under a mounted Secret. Checked at install, since the worker would
only find out at start. */}}
{{- define "bcw.validateApiKeys" -}}
{{- if not .Values.providers.existingConfigMap }}
{{- $envNames := list }}
{{- range .Values.apiKeys.env }}{{ $envNames = append $envNames .name }}{{ end }}
{{- range .Values.extraEnv }}{{ $envNames = append $envNames .name }}{{ end }}
{{- range $provider, $p := .Values.providers.config.providers }}
{{- range $account, $a := $p.accounts }}
{{- $vars := list }}
{{- with $a.api_key_env }}{{ $vars = append $vars (list "api_key_env" .) }}{{ end }}
{{- range $a.signing_keys_env }}{{ $vars = append $vars (list "signing_keys_env" .) }}{{ end }}
{{- with $a.azure_client_secret_env }}{{ $vars = append $vars (list "azure_client_secret_env" .) }}{{ end }}
{{- range $vars }}
{{- if not (or (has (index . 1) $envNames) $.Values.apiKeys.existingSecret) }}
{{- fail (printf "providers.config: %s/%s reads %s %s, which no apiKeys.env entry (nor apiKeys.existingSecret, extraEnv) provides" $provider $account (index . 0) (index . 1)) }}
{{- end }}
{{- end }}
{{- $files := list }}
{{- with $a.api_key_file }}{{ $files = append $files (list "api_key_file" .) }}{{ end }}
{{- with $a.signing_keys_file }}{{ $files = append $files (list "signing_keys_file" .) }}{{ end }}
{{- with $a.google_service_account_file }}{{ $files = append $files (list "google_service_account_file" .) }}{{ end }}
{{- with $a.azure_client_secret_file }}{{ $files = append $files (list "azure_client_secret_file" .) }}{{ end }}
{{- with $a.azure_certificate_file }}{{ $files = append $files (list "azure_certificate_file" .) }}{{ end }}
{{- range $files }}
{{- $file := index . 1 }}
{{- $found := false }}
{{- range $.Values.apiKeys.files }}
{{- if hasPrefix (printf "%s/" (trimSuffix "/" .mountPath)) $file }}{{ $found = true }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "providers.config: %s/%s reads %s %s, which is under no apiKeys.files mountPath" $provider $account (index . 0) $file) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
