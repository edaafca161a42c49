{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "asr-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name alone when it already contains the chart name.
Truncated to 63 characters; suffixes added by templates stay short ("-test-readyz" is the longest).
*/}}
{{- define "asr-platform.fullname" -}}
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
Chart label value: <name>-<version>.
*/}}
{{- define "asr-platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object.
*/}}
{{- define "asr-platform.labels" -}}
helm.sh/chart: {{ include "asr-platform.chart" . }}
{{ include "asr-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: asr-platform
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (stable across upgrades: never add version-like values here).
*/}}
{{- define "asr-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asr-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of the operator's objects.
*/}}
{{- define "asr-platform.operatorLabels" -}}
{{ include "asr-platform.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "asr-platform.operatorSelectorLabels" -}}
{{ include "asr-platform.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "asr-platform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "asr-platform.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Images: repository@digest when a digest is set, else repository:tag with the tag defaulting to the chart's
appVersion. Call with (list $ .Values.<x>.image).
*/}}
{{- define "asr-platform.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "asr-platform.operatorImage" -}}
{{- include "asr-platform.image" (list . .Values.operator.image) }}
{{- end }}

{{- define "asr-platform.inferenceImage" -}}
{{- include "asr-platform.image" (list . .Values.inference.image) }}
{{- end }}

{{/*
Watched namespaces, de-duplicated, comma-separated (empty: cluster-wide).
*/}}
{{- define "asr-platform.watchNamespaces" -}}
{{- .Values.operator.watchNamespaces | uniq | join "," }}
{{- end }}

{{/*
"true" when the operator watches the whole cluster.
*/}}
{{- define "asr-platform.clusterWide" -}}
{{- if empty .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
kopf peering object name (empty: standalone).
*/}}
{{- define "asr-platform.peeringName" -}}
{{- if .Values.operator.peering.enabled }}
{{- default (include "asr-platform.fullname" .) .Values.operator.peering.name }}
{{- end }}
{{- end }}

{{/*
Pod- and container-level security settings shared by every pod of the chart: non-root (UID 10001),
RuntimeDefault seccomp, read-only root filesystem, no privilege escalation, no capabilities.
*/}}
{{- define "asr-platform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "asr-platform.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Readiness-test target URL ("" when no target is known).
*/}}
{{- define "asr-platform.testReadyzURL" -}}
{{- if .Values.tests.url }}
{{- .Values.tests.url }}
{{- else }}
{{- $first := dict }}
{{- if .Values.asrDeployments }}{{ $first = first .Values.asrDeployments }}{{ end }}
{{- $name := default (get $first "name") .Values.tests.asrDeploymentName }}
{{- if $name }}
{{- $ns := .Values.tests.namespace }}
{{- if not $ns }}
{{- if and $first (eq (get $first "name") $name) }}{{ $ns = default .Release.Namespace (get $first "namespace") }}{{ else }}{{ $ns = .Release.Namespace }}{{ end }}
{{- end }}
{{- $port := int .Values.tests.port }}
{{- if and (not $port) $first (eq (get $first "name") $name) }}
{{- $port = int (dig "spec" "service" "port" 0 $first) }}
{{- end }}
{{- printf "http://%s.%s.svc:%d/readyz" $name $ns (ternary $port 8000 (gt $port 0)) }}
{{- end }}
{{- end }}
{{- end }}
