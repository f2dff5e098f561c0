{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "sequencer-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the operator pods (never change across upgrades). */}}
{{- define "sequencer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object of the chart. */}}
{{- define "sequencer-operator.labels" -}}
{{ include "sequencer-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "sequencer-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sequencer-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs on the sequencers' namespaces (least privilege). */}}
{{- define "sequencer-operator.rules" -}}
# Its own resources: watch them, write their status, delete finished actions after their TTL.
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequencers", "sequenceractions"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequencers/status"]
  verbs: ["get", "patch"]
# An action's status is replaced (PUT) with a resourceVersion precondition: it runs at most once.
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequenceractions/status"]
  verbs: ["update"]
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequenceractions"]
  verbs: ["delete"]
# Setting blockOwnerDeletion on children needs this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequencers/finalizers"]
  verbs: ["update"]
# Children, written by server-side apply and removed by the garbage collector (owner references).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The PodDisruptionBudget goes when replicas drop to 1; migration Jobs of older images are pruned.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The admin API key of each Sequencer (read by name only: no list, no watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
