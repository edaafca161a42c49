{{/*
RBAC rule lists shared by the ClusterRole (cluster-wide mode) and the per-namespace Roles.
*/}}
{{- define "asr-platform.rbac.namespacedRules" -}}
# --- The operator's own resource -------------------------------------------------------------------------
# kopf lists and watches ASRDeployments and patches its handler state into their annotations; the operator
# reads each one again (get) before a resync and a status write. No update: nothing is written with PUT.
- apiGroups: ["asr-platform.io"]
  resources: ["asrdeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, observed generation and endpoint, written as a merge patch of the status subresource.
- apiGroups: ["asr-platform.io"]
  resources: ["asrdeployments/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion: under OwnerReferencesPermissionEnforcement
# (OpenShift, hardened clusters) setting it needs update on the owner's finalizers subresource.
- apiGroups: ["asr-platform.io"]
  resources: ["asrdeployments/finalizers"]
  verbs: ["update"]
# --- Children the operator creates for each ASRDeployment (owned, garbage-collected with it) -------------
# list/watch: the child watches (label selector managed-by=asr-operator); get/create/patch/delete: reconcile
# (create-or-merge-patch, delete of children the spec no longer wants).
# The inference server's Deployment.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Its Service and the server configuration ConfigMap.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Its PodDisruptionBudget.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Queue-depth autoscaling, HPA engine (needs a custom-metrics adapter: see prometheusAdapter).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Queue-depth autoscaling, KEDA engine.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Scale to zero (autoscaling.minReplicas 0): the routing and cold-start rule of KEDA's HTTP add-on.
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Scraping of the inference servers by prometheus-operator.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# --- The inference pods: read only, for the status (why they are not ready: Unschedulable, ImagePullBackOff,
# CrashLoopBackOff, OOMKilled). list/watch with the label selector managed-by=asr-operator; never written.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# --- Kubernetes events: kopf posts warnings and errors as core/v1 events on the ASRDeployment (create); the
# status reads the kubelet's warnings about a pod stuck creating (FailedMount, ...): list by field selector.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
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
