{{/*
The Kubernetes API calls each component makes, as RBAC rules: the one place they are written.
charts/tests/rbac_expected.json holds the same list and the chart tests fail when the rendered
Roles grant anything more or less. Change both together, and only when the code's calls change.
All rules are namespaced (Roles in the release namespace, KUBE_NAMESPACE): nothing here needs
cluster scope.
*/}}

{{/* API (EXECUTOR=kubernetes): creates the ImportJob for each upload (a conflict means it
exists); a retry of a failed import reads it and raises its spec.retries (merge patch); a
cancel sets its spec.cancelRequested (merge patch). */}}
{{- define "bulk-import.rbac.apiRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs"]
  verbs: ["create", "get", "patch"]
{{- end }}

{{/*
Operator: the ImportJob controller (list and watch into its cache; the finalizer by JSON
patch; update on importjobs/finalizers, which setting blockOwnerDeletion on the Jobs' owner
reference needs where the OwnerReferencesPermissionEnforcement admission plugin is on); delete once finished for IMPORTJOB_TTL_SECONDS_AFTER_FINISHED), its status (server-side apply: patch), the Jobs it owns (cached by list and watch;
create; delete) and their pods (cached: failure reasons such as
OOMKilled or ImagePullBackOff), the Job controller's FailedCreate Events (core/v1, list), its
own Events (kube-runtime's recorder, events.k8s.io/v1: create, and patch for a repeated one) and
the leader-election Lease.
The importer has no rules at all: it calls no Kubernetes API.
*/}}
{{- define "bulk-import.rbac.operatorRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs/status"]
  verbs: ["patch"]
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* The operator's one cluster-scoped read: the installed ImportJob CRD, checked at start for
the fields the operator needs (a ClusterRole: CRDs are cluster-scoped), by name only. */}}
{{- define "bulk-import.rbac.operatorClusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["importjobs.bulkimport.dev"]
  verbs: ["get"]
{{- end }}

{{/* Namespace users, through ClusterRoles aggregated into view (read) and edit/admin (also
create, cancel and retry by patch or update, delete). Cluster-scoped objects, but they grant
nothing by themselves: only where a RoleBinding gives someone view, edit or admin. */}}
{{- define "bulk-import.rbac.viewRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs", "importjobs/status"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "bulk-import.rbac.editRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs"]
  verbs: ["create", "patch", "update", "delete", "deletecollection"]
{{- end }}
