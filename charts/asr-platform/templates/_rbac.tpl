{{/*
RBAC rule lists shared by the ClusterRole (cluster-wide mode) and the per-namespace Roles.
*/}}
{{- define "asr-platform.rbac.namespacedRules" -}}
# --- The operator's own resource -------------------------------------------------------------------------
# Watch ASRDeployments; kopf patches them to add its finalizer and keep its handler state in annotations.
- apiGroups: ["asr-platform.io"]
  resources: ["asrdeployments"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Report conditions, observed generation and endpoint in the status subresource.
- apiGroups: ["asr-platform.io"]
  resources: ["asrdeployments/status"]
  verbs: ["get", "patch", "update"]
# --- Children the operator creates for each ASRDeployment (owned, garbage-collected with it) -------------
# The inference server's Deployment.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Its Service and the server configuration ConfigMap.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Its PodDisruptionBudget.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Queue-depth autoscaling, HPA engine (needs a custom-metrics adapter: see prometheusAdapter).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Queue-depth autoscaling, KEDA engine.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Scraping of the inference servers by prometheus-operator.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# --- Kubernetes events (kopf posts handler progress and errors as events on the ASRDeployment) ----------
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "asr-platform.rbac.kopfClusterRules" -}}
# --- kopf itself ---------------------------------------------------------------------------------------
# Resource discovery: kopf watches CRDs to notice the ASRDeployment (and peering) CRDs appearing or changing.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# Namespace discovery: kopf lists and watches namespaces to resolve its namespace list and to notice
# namespaces being created or deleted.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
