{{/* crane-server and the run archive: names and settings shared by server.yaml and (once the
     operator Deployment includes "crane.archiveEnv") the operator. */}}

{{- define "crane.serverSelector" -}}
app.kubernetes.io/name: {{ include "crane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "crane.serverFullname" -}}
{{- printf "%s-server" (include "crane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The archive's environment (operator and server): the URL from the Secret, the CA file,
     and, for the operator, retention. Empty when the archive is off. */}}
{{- define "crane.archiveEnv" -}}
{{- if .Values.archive.enabled }}
- name: CRANE_ARCHIVE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "archive.existingSecret (a Secret with the PostgreSQL URL) is required when archive.enabled" .Values.archive.existingSecret }}
      key: {{ .Values.archive.existingSecretKey }}
{{- if .Values.archive.caSecret.name }}
- name: CRANE_ARCHIVE_CA_FILE
  value: /var/run/secrets/crane/archive-ca/ca.crt
{{- end }}
- name: CRANE_ARCHIVE_RETENTION_DAYS
  value: {{ .Values.archive.retentionDays | int64 | quote }}
- name: CRANE_ARCHIVE_PRUNE_INTERVAL_SECONDS
  value: {{ .Values.archive.pruneIntervalSeconds | int64 | quote }}
{{- end }}
{{- end }}

{{- define "crane.archiveVolumeMounts" -}}
{{- if and .Values.archive.enabled .Values.archive.caSecret.name }}
- name: archive-ca
  mountPath: /var/run/secrets/crane/archive-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "crane.archiveVolumes" -}}
{{- if and .Values.archive.enabled .Values.archive.caSecret.name }}
- name: archive-ca
  secret:
    secretName: {{ .Values.archive.caSecret.name }}
    items:
      - key: {{ .Values.archive.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end }}
