{{- define "kastor-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kastor-operator.fullname" -}}
{{- if contains (include "kastor-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kastor-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kastor-operator.labels" -}}
app.kubernetes.io/name: {{ include "kastor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kastor-operator.selector" -}}
app.kubernetes.io/name: {{ include "kastor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kastor-operator.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kastor-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs in a namespace it manages: exactly what it calls, nothing more.
  Custom resources: kopf lists/watches them and patches its annotations and finalizers; the
  reconcilers get them and merge-patch status. Owner references with blockOwnerDeletion need
  `update` on <kind>/finalizers where OwnerReferencesPermissionEnforcement is on. Pods: list,
  watch, create, delete; Services: get (read before create: re-creating a NodePort Service is a
  422, not a 409), create; Secrets: get, create (the token); Events: create;
  PodDisruptionBudgets: get, create, and delete (spec.disruptionBudget.enabled: false). */}}
{{- define "kastor-operator.namespacedRules" -}}
- apiGroups: ["kastor.dev"]
  resources: ["actorclusters", "detachedactors"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kastor.dev"]
  resources: ["actorclusters/status", "detachedactors/status"]
  verbs: ["patch"]
- apiGroups: ["kastor.dev"]
  resources: ["actorclusters/finalizers", "detachedactors/finalizers"]
  verbs: ["update"]
- apiGroups: ["kastor.dev"]
  resources: ["actorworkergroups"]  # one per worker group, made, resized and deleted with it
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["kastor.dev"]
  resources: ["actorworkergroups/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]  # the managed Redis (spec.gcs.redis.managed)
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]  # a DetachedActor's spec.state volume
  verbs: ["get", "create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]  # the head's and the managed Redis's
  verbs: ["get", "create", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}
