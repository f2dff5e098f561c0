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

{{/* The rules the operator needs on the sequencers' namespaces (least privilege). The operator's
     RBAC contract test (operator/src/rbac_contract.rs) fails on any request not granted here and on
     any grant no request uses. */}}
{{- define "sequencer-operator.rules" -}}
# Its own resources: watch them (an action reads its Sequencer by name, and re-reads itself after a
# conflicting status write), write their status, delete finished actions after their TTL.
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequencers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequenceractions"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sequencer.stateset.io"]
  resources: ["sequencers/status"]
  verbs: ["patch"]
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
# Children: read first (an object of another owner is never written), written by server-side apply
# (an apply that creates is authorised as create too), watched by the managed-by label, removed by
# the garbage collector.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The PodDisruptionBudget of ours goes when replicas drop to 1; failed and superseded migration Jobs
# of ours are deleted.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Secrets: read by name (the admin API key; the referenced keys' values, hashed into the pod
# template), and watched as metadata only, so that a rotation rolls the pods.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# The PodMonitor of a Sequencer with spec.monitoring.podMonitor (Prometheus Operator, when installed).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Namespace of the leader Lease: watchNamespace when set (every request stays there), else the
     release namespace. */}}
{{- define "sequencer-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace -}}
{{- end -}}
