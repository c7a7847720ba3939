{{- define "chat-ui.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/component: ui
app.kubernetes.io/part-of: rag-edge
{{- end -}}
