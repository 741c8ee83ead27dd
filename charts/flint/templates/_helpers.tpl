{{- define "flint.labels" -}}
app.kubernetes.io/part-of: flint
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "flint.image" -}}
{{- $digest := get (.root.Values.image.digests | default dict) .name -}}
{{ .root.Values.image.registry }}/{{ .name }}{{ if $digest }}@{{ $digest }}{{ else }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}{{ end }}
{{- end }}

{{- define "flint.prometheusUrl" -}}
{{- if .Values.prometheus.enabled -}}
http://{{ .Release.Name }}-prometheus.{{ .Release.Namespace }}.svc:9090
{{- else -}}
{{ .Values.prometheus.url }}
{{- end -}}
{{- end }}

{{- define "flint.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "flint.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end }}

{{- define "flint.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ .Release.Name }}-nats.{{ .Release.Namespace }}.svc:4222
{{- else -}}
{{ .Values.nats.url }}
{{- end -}}
{{- end }}

{{- /* The Secret holding the NATS login (keys user, password): the chart's own, or
nats.existingSecret for a NATS of yours; empty: NATS asks for none. */ -}}
{{- define "flint.natsSecret" -}}
{{- if .Values.nats.enabled -}}
{{ .Release.Name }}-nats-auth
{{- else -}}
{{ .Values.nats.existingSecret }}
{{- end -}}
{{- end }}

{{- /* The gateway's and queue workers' NATS login, from that Secret. */ -}}
{{- define "flint.natsLogin" -}}
{{- with (include "flint.natsSecret" .) }}
- name: FLINT_NATS_USER
  valueFrom: {secretKeyRef: {name: {{ . }}, key: user}}
- name: FLINT_NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: password}}
{{- end }}
{{- end }}

{{- /* This installation's part of NATS: its streams and subjects are named from it, so that
two installations sharing a NATS never take each other's calls. */ -}}
{{- define "flint.natsPrefix" -}}
{{ .Release.Namespace }}-{{ .Release.Name }}
{{- end }}

{{- /* The host names the gateway answers besides IP addresses (DNS rebinding protection):
its Service's names, the Ingress hosts, and gateway.allowedHosts. */ -}}
{{- define "flint.allowedHosts" -}}
{{- $svc := printf "%s-gateway" .Release.Name -}}
{{- $hosts := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- with .Values.gateway.ingress.functionsHost }}{{ $hosts = append $hosts . }}{{ end -}}
{{- with .Values.gateway.ingress.portalHost }}{{ $hosts = append $hosts . }}{{ end -}}
{{- join "," (concat $hosts .Values.gateway.allowedHosts) -}}
{{- end }}
