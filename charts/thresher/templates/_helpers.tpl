{{/*
thresher.name: the chart name, or nameOverride; used for app.kubernetes.io/name.
Truncated to 63 characters (the label-value limit).
*/}}
{{- define "thresher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
thresher.fullname: prefix of every resource name. fullnameOverride wins; else
<release>-<name>, or just <release> when it already contains the name.
*/}}
{{- define "thresher.fullname" -}}
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

{{/*
thresher.chart: chart name and version for the helm.sh/chart label.
*/}}
{{- define "thresher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
thresher.selectorLabels: the immutable labels a Deployment selector and a
Service select on. Never add a label here that can change between releases.
*/}}
{{- define "thresher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thresher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
thresher.labels: the full label set on every resource: selector labels plus
version, chart, manager and commonLabels.
*/}}
{{- define "thresher.labels" -}}
helm.sh/chart: {{ include "thresher.chart" . }}
{{ include "thresher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thresher
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
thresher.serviceAccountName: the ServiceAccount the operator runs as.
*/}}
{{- define "thresher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "thresher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
thresher.image: repository:tag (tag defaults to appVersion), or repository@digest.
Call with (dict "image" <image values> "root" $).
*/}}
{{- define "thresher.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
thresher.rbacRules: files/rbac-rules.yaml as a dict (namespaced, cluster,
clusterWide), the one source of the operator's permissions.
*/}}
{{- define "thresher.rbacRules" -}}
{{- .Files.Get "files/rbac-rules.yaml" }}
{{- end }}

{{/*
thresher.monitoringEnabled: "true" when a Prometheus Operator object should be
rendered. Call with (dict "values" <serviceMonitor|prometheusRule values>
"kind" "ServiceMonitor" "root" $). Fails, rather than silently skipping,
when it was asked for but the cluster lacks the API and force is off.
*/}}
{{- define "thresher.monitoringEnabled" -}}
{{- if .values.enabled }}
{{- if or .values.force (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- "true" }}
{{- else }}
{{- fail (printf "%s requested but the cluster serves no monitoring.coreos.com/v1 API: install the Prometheus Operator CRDs, or set force=true to render it anyway (or pass helm template --api-versions monitoring.coreos.com/v1)" .kind) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
thresher.testLabels: labels of the `helm test` objects: the full set, but with component
helm-test, so that no operator selector (Deployment, Service) ever matches the test Pod.
*/}}
{{- define "thresher.testLabels" -}}
{{- include "thresher.labels" . | replace "app.kubernetes.io/component: operator" "app.kubernetes.io/component: helm-test" }}
{{- end }}
