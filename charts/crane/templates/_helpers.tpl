{{/* Names, labels and the settings several templates share. */}}

{{- define "crane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "crane.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "crane.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "crane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "crane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "crane.operatorSelector" -}}
app.kubernetes.io/name: {{ include "crane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "crane.redisSelector" -}}
app.kubernetes.io/name: {{ include "crane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "crane.serviceAccountName" -}}
{{- default (include "crane.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "crane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "crane.executorImage" -}}
{{- default (include "crane.image" .) .Values.executor.image }}
{{- end }}

{{- define "crane.redisFullname" -}}
{{- printf "%s-redis" (include "crane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Redis URL the operator, planners and workers use. */}}
{{- define "crane.redisUrl" -}}
{{- if .Values.redis.bundled }}
{{- printf "redis://%s.%s.svc:6379" (include "crane.redisFullname" .) .Release.Namespace }}
{{- else }}
{{- required "redis.external.url is required when redis.bundled is false" .Values.redis.external.url }}
{{- end }}
{{- end }}

{{/* Secret name and key holding the operator's Redis password; empty name: no password. Not
"<fullname>-redis": with the release named crane that is crane-redis, the name of the Secret the
operator writes in each run namespace (the release namespace is one) with that namespace's login. */}}
{{- define "crane.redisSecretName" -}}
{{- if .Values.redis.bundled }}
{{- default (printf "%s-admin" (include "crane.redisFullname" .)) .Values.redis.existingSecret }}
{{- else }}
{{- .Values.redis.external.passwordSecret.name }}
{{- end }}
{{- end }}

{{/* The operator's Redis user; empty: Redis's default user (the bundled Redis's requirepass). */}}
{{- define "crane.redisUsername" -}}
{{- if not .Values.redis.bundled }}{{ .Values.redis.external.username }}{{ end }}
{{- end }}

{{- define "crane.redisSecretKey" -}}
{{- if .Values.redis.bundled }}password{{ else }}{{ .Values.redis.external.passwordSecret.key }}{{ end }}
{{- end }}

{{/* Secret name holding the LLM API key; empty: none. */}}
{{- define "crane.llmSecretName" -}}
{{- if .Values.llm.existingSecret }}
{{- .Values.llm.existingSecret }}
{{- else if .Values.llm.apiKey }}
{{- printf "%s-llm" (include "crane.fullname" .) }}
{{- end }}
{{- end }}

{{- define "crane.llmSecretKey" -}}
{{- if .Values.llm.existingSecret }}{{ .Values.llm.existingSecretKey }}{{ else }}apiKey{{ end }}
{{- end }}

{{/* The release namespace plus runNamespaces, without duplicates. */}}
{{- define "crane.runNamespaces" -}}
{{- $all := list .Release.Namespace }}
{{- range .Values.runNamespaces }}{{ $all = append $all . }}{{ end }}
{{- $all | uniq | toJson }}
{{- end }}

{{/* Pod Security "restricted" for a container. */}}
{{- define "crane.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The OTEL_* variables of telemetry.*: the operator's, which it hands on to planner and worker
pods. Nothing without an endpoint.
*/}}
{{- define "crane.otelEnv" -}}
{{- with .Values.telemetry }}
{{- if .otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
{{- with .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with .resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
- name: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
  value: {{ .captureMessageContent | quote }}
{{- end }}
{{- end }}
{{- end }}
