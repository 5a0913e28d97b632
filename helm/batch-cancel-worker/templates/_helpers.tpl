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

{{/* Labels of every object, whichever component it belongs to: (dict "root" $ "selector" <selector labels>). */}}
{{- define "bcw.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ .selector }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "bcw.labels" -}}
{{ include "bcw.commonLabels" (dict "root" . "selector" (include "bcw.selectorLabels" .)) }}
app.kubernetes.io/component: worker
{{- end }}

{{/* The webhook receiver (`batch-cancel-worker webhooks`). Its pods carry another app.kubernetes.io/name than the
worker's, so no worker selector (Deployment, Service, PodDisruptionBudget, ServiceMonitor, topology spread) ever
matches a receiver pod; the worker's selector stays as it was (a Deployment's selector cannot change). */}}
{{- define "bcw.webhooks.fullname" -}}
{{- printf "%s-webhooks" (include "bcw.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "bcw.webhooks.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-webhooks" (include "bcw.name" . | trunc 54 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bcw.webhooks.labels" -}}
{{ include "bcw.commonLabels" (dict "root" . "selector" (include "bcw.webhooks.selectorLabels" .)) }}
app.kubernetes.io/component: webhooks
app.kubernetes.io/part-of: {{ include "bcw.name" . }}
{{- end }}

{{- define "bcw.webhooks.serviceAccountName" -}}
{{- if .Values.webhooks.serviceAccount.create }}
{{- default (include "bcw.webhooks.fullname" .) .Values.webhooks.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.webhooks.serviceAccount.name }}
{{- end }}
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

{{/* ------------------------------------------------------------------------------------------------------------
Pod parts the worker and the webhook receiver share: one definition each, included by both Deployments.
------------------------------------------------------------------------------------------------------------ */}}

{{/* The Kafka connection: bootstrap servers, security protocol, SASL (username from the Secret, password as a
file) and TLS files from the mounted kafka.existingSecret. Container env entries. */}}
{{- define "bcw.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
- name: BCW_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $k.bootstrapServers | quote }}
- name: BCW_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if $k.saslMechanism }}
- name: BCW_KAFKA_SASL_MECHANISM
  value: {{ $k.saslMechanism | quote }}
- name: BCW_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.existingSecret }}
      key: {{ $k.secretKeys.username }}
- name: BCW_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/%s" (include "bcw.kafkaSecretDir" .) $k.secretKeys.password | quote }}
{{- end }}
{{- if $k.existingSecret }}
{{- with $k.secretKeys.ca }}
- name: BCW_KAFKA_SSL_CAFILE
  value: {{ printf "%s/%s" (include "bcw.kafkaSecretDir" $) . | quote }}
{{- end }}
{{- with $k.secretKeys.cert }}
- name: BCW_KAFKA_SSL_CERTFILE
  value: {{ printf "%s/%s" (include "bcw.kafkaSecretDir" $) . | quote }}
{{- end }}
{{- with $k.secretKeys.key }}
- name: BCW_KAFKA_SSL_KEYFILE
  value: {{ printf "%s/%s" (include "bcw.kafkaSecretDir" $) . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod annotation that rolls the pods when the rendered providers file changes. */}}
{{- define "bcw.providersChecksum" -}}
{{- if not .Values.providers.existingConfigMap -}}
checksum/providers: {{ include (print .Template.BasePath "/configmap-providers.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{- define "bcw.providersFileEnv" -}}
- name: BCW_PROVIDERS_FILE
  value: {{ printf "%s/%s" (include "bcw.providersDir" .) (include "bcw.providersKey" .) | quote }}
{{- end }}

{{/* Mounts and volumes every pod of the release has: the providers file, a small in-memory /tmp (the root
filesystem is read-only) and, with kafka.existingSecret, the Kafka credentials. */}}
{{- define "bcw.sharedVolumeMounts" -}}
- name: providers
  mountPath: {{ include "bcw.providersDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.existingSecret }}
- name: kafka-credentials
  mountPath: {{ include "bcw.kafkaSecretDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "bcw.sharedVolumes" -}}
- name: providers
  configMap:
    name: {{ include "bcw.providersConfigMap" . }}
    items:
      - key: {{ include "bcw.providersKey" . }}
        path: {{ include "bcw.providersKey" . }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if .Values.kafka.existingSecret }}
- name: kafka-credentials
  secret:
    secretName: {{ .Values.kafka.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- end }}

{{/* The probes on the metrics port: /livez for startup and liveness, /readyz for readiness. */}}
{{- define "bcw.probes" -}}
startupProbe:
  httpGet:
    path: /livez
    port: metrics
  {{- toYaml .Values.startupProbe | nindent 2 }}
livenessProbe:
  httpGet:
    path: /livez
    port: metrics
  {{- toYaml .Values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .Values.readinessProbe | nindent 2 }}
{{- end }}

{{/* Scheduling shared by both Deployments. Called with (dict "root" $ "selector" <selector labels YAML>): a
topology spread constraint without a labelSelector gets the calling component's own pods. */}}
{{- define "bcw.scheduling" -}}
{{- $root := .root }}
{{- with $root.Values.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" ($.selector | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget's budget: (dict "pdb" <values> "what" <values path for the error>). */}}
{{- define "bcw.pdbBudget" -}}
{{- if and (not (kindIs "invalid" .pdb.minAvailable)) (not (kindIs "invalid" .pdb.maxUnavailable)) }}
{{- fail (printf "%s: set only one of minAvailable and maxUnavailable (the other to null)" .what) }}
{{- end }}
{{- if not (kindIs "invalid" .pdb.minAvailable) -}}
minAvailable: {{ .pdb.minAvailable }}
{{- else -}}
maxUnavailable: {{ .pdb.maxUnavailable }}
{{- end }}
{{- end }}

{{/* The ports of kafka.bootstrapServers ("host:port,host:port"; 9092 where none is given): the receiver's
NetworkPolicy allows egress to these unless webhooks.networkPolicy.kafkaPorts lists others. */}}
{{- define "bcw.kafkaPorts" -}}
{{- $ports := list }}
{{- if .Values.webhooks.networkPolicy.kafkaPorts }}
{{- range .Values.webhooks.networkPolicy.kafkaPorts }}{{ $ports = append $ports (int64 .) }}{{ end }}
{{- else }}
{{- range splitList "," .Values.kafka.bootstrapServers }}
{{- $port := regexFind ":[0-9]+$" (trim .) | trimPrefix ":" }}
{{- $ports = append $ports (default "9092" $port | int64) }}
{{- end }}
{{- end }}
{{- toJson (uniq $ports) }}
{{- end }}

{{/* Every webhook secret the providers file names (an account's push.secrets_env / push.secrets_file) must reach
the receiver: an env var from webhooks.secrets.env, or a file under a webhooks.secrets.files mount. They go to
the receiver only; the worker never sees them. Checked at install, since the receiver would only find out at
start. Push is only for the dialects that can push (openai, gemini, bedrock). */}}
{{- define "bcw.validateWebhookSecrets" -}}
{{- if not .Values.providers.existingConfigMap }}
{{- $envNames := list }}
{{- range .Values.webhooks.secrets.env }}{{ $envNames = append $envNames .name }}{{ end }}
{{- range $provider, $p := .Values.providers.config.providers }}
{{- range $account, $a := $p.accounts }}
{{- with $a.push }}
{{- if not (has $p.dialect (list "openai" "gemini" "bedrock")) }}
{{- fail (printf "providers.config: %s/%s has push, which dialect %s cannot do (only openai, gemini and bedrock push)" $provider $account $p.dialect) }}
{{- end }}
{{- if and .header (ne $p.dialect "bedrock") }}
{{- fail (printf "providers.config: %s/%s: push.header is for bedrock only (dialect %s signs its webhooks)" $provider $account $p.dialect) }}
{{- end }}
{{- range .secrets_env }}
{{- if not (has . $envNames) }}
{{- fail (printf "providers.config: %s/%s reads push.secrets_env %s, which no webhooks.secrets.env entry provides" $provider $account .) }}
{{- end }}
{{- end }}
{{- with .secrets_file }}
{{- $file := . }}
{{- $found := false }}
{{- range $.Values.webhooks.secrets.files }}
{{- if hasPrefix (printf "%s/" (trimSuffix "/" .mountPath)) $file }}{{ $found = true }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "providers.config: %s/%s reads push.secrets_file %s, which is under no webhooks.secrets.files mountPath" $provider $account $file) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
