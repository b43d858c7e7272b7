{{/* The control-plane services, in start order (identity first: the others ask it who
their callers are). Their Kubernetes names are these, unprefixed, because
deploy/nginx/slipway.conf routes to them by these host names. */}}
{{- define "slipway.services" -}}
identity catalog orchestrator build-runner log-streaming
{{- end -}}

{{- define "slipway.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: slipway
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "slipway.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: slipway
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* <registry>/<service>:<tag>, the tag defaulting to the chart's appVersion. */}}
{{- define "slipway.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .service $tag -}}
{{- end -}}

{{/* The Secret the chart creates when an existing one is not named. */}}
{{- define "slipway.secretName" -}}
{{- printf "%s-secrets" .Release.Name -}}
{{- end -}}

{{- define "slipway.settingsSecret" -}}
{{- .Values.secrets.existingSecret | default (include "slipway.secretName" .) -}}
{{- end -}}

{{- define "slipway.databaseSecret" -}}
{{- .Values.database.existingSecret | default (include "slipway.secretName" .) -}}
{{- end -}}
