{{/* Names, labels and the pieces of pod specs every component shares. */}}

{{- define "bulk-import.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-wide prefix of every object name; kept short enough for a "-operator" suffix. */}}
{{- define "bulk-import.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bulk-import.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bulk-import.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulk-import.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bulk-import.labels" -}}
helm.sh/chart: {{ include "bulk-import.chart" . }}
{{ include "bulk-import.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bulk-import
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "api") */}}
{{- define "bulk-import.componentLabels" -}}
{{ include "bulk-import.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "bulk-import.componentSelectorLabels" -}}
{{ include "bulk-import.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ---- object names ------------------------------------------------------------------- */}}

{{- define "bulk-import.apiName" -}}{{ include "bulk-import.fullname" . }}-api{{- end }}
{{- define "bulk-import.operatorName" -}}{{ include "bulk-import.fullname" . }}-operator{{- end }}
{{- define "bulk-import.importerName" -}}{{ include "bulk-import.fullname" . }}-importer{{- end }}
{{- define "bulk-import.configName" -}}{{ include "bulk-import.fullname" . }}-config{{- end }}
{{- define "bulk-import.operatorConfigName" -}}{{ include "bulk-import.fullname" . }}-operator-config{{- end }}
{{- define "bulk-import.postgresName" -}}{{ include "bulk-import.fullname" . }}-postgres{{- end }}
{{- define "bulk-import.redisName" -}}{{ include "bulk-import.fullname" . }}-redis{{- end }}
{{- define "bulk-import.minioName" -}}{{ include "bulk-import.fullname" . }}-minio{{- end }}
{{- define "bulk-import.depsSecretName" -}}{{ include "bulk-import.fullname" . }}-dev-deps{{- end }}

{{/* The Secret every component reads DATABASE_URL, REDIS_URL, S3_* keys and JWT_SECRET from. */}}
{{- define "bulk-import.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "bulk-import.fullname" . }}
{{- else }}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* The keys of that Secret: the only settings that are secret. */}}
{{- define "bulk-import.secretKeys" -}}
DATABASE_URL REDIS_URL S3_ACCESS_KEY S3_SECRET_KEY JWT_SECRET
{{- end }}

{{- define "bulk-import.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "bulk-import.importerImage" -}}
{{- $repo := default .Values.image.repository .Values.importer.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.importer.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* ---- settings derived from the bundled development dependencies ------------------------ */}}

{{/* The bundled MinIO, when enabled, wins over s3.endpointUrl: that is what enabling it is for. */}}
{{- define "bulk-import.s3EndpointUrl" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "bulk-import.minioName" .) }}
{{- else }}
{{- required "s3.endpointUrl is required (or set minio.enabled=true for a development MinIO)" .Values.s3.endpointUrl }}
{{- end }}
{{- end }}

{{- define "bulk-import.s3PublicEndpointUrl" -}}
{{- default (include "bulk-import.s3EndpointUrl" .) .Values.s3.publicEndpointUrl }}
{{- end }}

{{/* ---- pieces of pod specs -------------------------------------------------------------- */}}

{{/*
The keys the operator reads (it never signs a token: no JWT_SECRET; no Redis). The importer pods
it creates get DATABASE_URL, REDIS_URL, S3_ACCESS_KEY and S3_SECRET_KEY (operator/src/job_template.rs).
*/}}
{{- define "bulk-import.operatorSecretKeys" -}}
DATABASE_URL S3_ACCESS_KEY S3_SECRET_KEY
{{- end }}

{{/* All the secret settings, each by secretKeyRef. */}}
{{- define "bulk-import.secretEnv" -}}
{{- include "bulk-import.secretEnvFor" (dict "ctx" . "keys" (include "bulk-import.secretKeys" .)) }}
{{- end }}

{{/* Some secret settings, each by secretKeyRef: (dict "ctx" $ "keys" "A B"). */}}
{{- define "bulk-import.secretEnvFor" -}}
{{- $secret := include "bulk-import.secretName" .ctx }}
{{- range $key := splitList " " .keys }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}

{{/* Rolls pods when their configuration changes. */}}
{{- define "bulk-import.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secrets.create }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{- define "bulk-import.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "bulk-import.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "bulk-import.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The restricted security context of the development dependencies, for a given user id. */}}
{{- define "bulk-import.depPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* One step of the import test: the `bulk-import` CLI with these arguments against the
release's API: (dict "ctx" $ "url" URL "secret" NAME "args" LIST). */}}
{{- define "bulk-import.testCliContainer" -}}
image: {{ include "bulk-import.image" .ctx | quote }}
imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
command: ["bulk-import"]
args: {{ toJson .args }}
env:
  - name: BULK_IMPORT_URL
    value: {{ .url | quote }}
  - name: HOME
    value: /home/cli
  - name: NO_COLOR
    value: "1"
  - name: POD_UID
    valueFrom:
      fieldRef:
        fieldPath: metadata.uid
  - name: BULK_IMPORT_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .secret }}
        key: BULK_IMPORT_PASSWORD
resources:
  {{- toYaml .ctx.Values.tests.resources | nindent 2 }}
securityContext:
  {{- include "bulk-import.containerSecurityContext" .ctx | nindent 2 }}
volumeMounts:
  - name: csv
    mountPath: /data
    readOnly: true
  - name: home
    mountPath: /home/cli
{{- end }}

{{/*
MAX_ACTIVE_IMPORTS: operator.maxActiveImports when set, else what postgres.connectionBudget
leaves for importers: (budget - 10 x api.replicas - 4 x operator.replicas - headroom) /
(importer.dbPool + 3). 10 is the API's pool, 4 the operator's; an importer holds its pool
(importer.dbPool), its claim's lock connection and the loader's two. A budget that leaves no
importer fails the install.
*/}}
{{- define "bulk-import.maxActiveImports" -}}
{{- $v := .Values -}}
{{- if gt (int64 $v.operator.maxActiveImports) 0 -}}
{{- int64 $v.operator.maxActiveImports -}}
{{- else -}}
{{- $taken := add (mul 10 (int64 $v.api.replicas)) (mul 4 (int64 $v.operator.replicas)) (int64 $v.postgres.connectionHeadroom) -}}
{{- $each := add (int64 $v.importer.dbPool) 3 -}}
{{- $n := div (sub (int64 $v.postgres.connectionBudget) $taken) $each -}}
{{- if lt $n 1 -}}
{{- fail (printf "postgres.connectionBudget %d leaves no room for an importer: the API and operator pools and the headroom take %d, one importer needs %d (raise the budget or set operator.maxActiveImports)" (int64 $v.postgres.connectionBudget) $taken $each) -}}
{{- end -}}
{{- $n -}}
{{- end -}}
{{- end -}}
