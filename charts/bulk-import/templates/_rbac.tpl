{{/*
The Kubernetes API calls each component makes, as RBAC rules: the one place they are written.
charts/tests/rbac_expected.json holds the same list and the chart tests fail when the rendered
Roles grant anything more or less. Change both together, and only when the code's calls change.
All rules are namespaced (Roles in the release namespace, KUBE_NAMESPACE): nothing here needs
cluster scope.
*/}}

{{/* API (EXECUTOR=kubernetes): creates the ImportJob for each upload and may read it back. */}}
{{- define "bulk-import.rbac.apiRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs"]
  verbs: ["create", "get"]
{{- end }}

{{/*
Operator: the ImportJob controller (watch; finalizer list via patch or replace), its status
(server-side apply), the Jobs it owns and their pods (failure reasons such as OOMKilled or
ImagePullBackOff), events (kube-runtime's recorder, events.k8s.io/v1) and the leader-election
Lease.
*/}}
{{- define "bulk-import.rbac.operatorRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* Importer pods: progress into the ImportJob's status by server-side apply. */}}
{{- define "bulk-import.rbac.importerRules" -}}
- apiGroups: ["bulkimport.dev"]
  resources: ["importjobs/status"]
  verbs: ["get", "patch"]
{{- end }}
