{{/* Names and labels shared by every template. */}}

{{- define "ftp-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ftp-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ftp-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ftp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ftp-operator
{{- end }}

{{- define "ftp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ftp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "ftp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ftp-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag, the tag defaulting to appVersion. */}}
{{- define "ftp-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The FTP server pods' default image: the operator's own unless overridden (one image, both binaries). */}}
{{- define "ftp-operator.ftpServerImage" -}}
{{- default (include "ftp-operator.image" .) .Values.ftpServerImage }}
{{- end }}

{{/* What the chart adds to the CRD's metadata (two-space indent, under `metadata:`). */}}
{{- define "ftp-operator.crdMetadata" -}}
{{- if .Values.crds.keep }}
  annotations:
    # Uninstalling the chart must not delete the CRD: that would delete every FtpServer.
    helm.sh/resource-policy: keep
{{- end }}
  labels:
    {{- include "ftp-operator.labels" . | nindent 4 }}
{{- end }}

{{/* Flags of `ftp-operator controller` that follow from values (POD_NAME/POD_NAMESPACE come by env). */}}
{{- define "ftp-operator.controllerArgs" -}}
- --metrics-listen=0.0.0.0:{{ .Values.metrics.port }}
- --leader-election-namespace=$(POD_NAMESPACE)
- --lease-name={{ include "ftp-operator.fullname" . }}
- --default-ftp-image={{ include "ftp-operator.ftpServerImage" . }}
- --node-tuning={{ .Values.nodeTuning.enabled }}
- --probe-interval-seconds={{ .Values.probe.intervalSeconds }}
- --probe-step-timeout-seconds={{ .Values.probe.stepTimeoutSeconds }}
- --node-port-range={{ .Values.cluster.nodePortRange }}
- --azure-rules-per-nic={{ .Values.cluster.azureRulesPerNic }}
{{- with .Values.watchNamespaces }}
- --namespace={{ join "," . }}
{{- /* The budgets need a cluster-wide LIST of Services, which the Roles do not grant. */}}
- --cluster-budgets=false
{{- end }}
{{- end }}

{{/* kube-score checks the operator Deployment skips; deployment.yaml gives the reason for each. */}}
{{- define "ftp-operator.kubeScoreIgnored" -}}
{{- $ignored := list "container-resources" "container-image-pull-policy" "container-ephemeral-storage-request-and-limit" "deployment-replicas" "deployment-has-poddisruptionbudget" "deployment-has-host-podantiaffinity" }}
{{- if not .Values.networkPolicy.enabled }}
{{- $ignored = append $ignored "pod-networkpolicy" }}
{{- end }}
{{- join "," $ignored }}
{{- end }}

{{/* What the FtpServer controller needs in every namespace it watches (rbac.yaml): a ClusterRole's
rules in a cluster-wide install, a Role's in each watched namespace otherwise. */}}
{{- define "ftp-operator.serverRules" -}}
# The resource it reconciles; /finalizers so owner references may block deletion of children.
- apiGroups: ["ftpoperator.dev"]
  resources: ["ftpservers"]
  verbs: ["get", "list", "watch", "update", "patch"]
- apiGroups: ["ftpoperator.dev"]
  resources: ["ftpservers/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["ftpoperator.dev"]
  resources: ["ftpservers/finalizers"]
  verbs: ["update"]
# What it builds for each FtpServer: the rendered config, the load-balancer Services, the
# server StatefulSet, the EndpointSlices routing each replica's passive slice and the
# PodDisruptionBudget. Deployments: those of earlier versions are deleted once the StatefulSet
# serves. (The node tuner DaemonSet is granted in the release namespace only.)
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Server pods are only read (IPs, readiness, ordinals for the EndpointSlices), and claims
# too (whether a shared one is ReadWriteMany).
- apiGroups: [""]
  resources: ["pods", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
# Users, password and TLS Secrets are read by name (a missing one is reported; users' lines
# and passwords go into the generated users file); the watch is metadata-only (names, to know
# which FtpServer to look at again).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# Secrets the operator creates (server-side apply) and owns, and never one it does not control:
# each FtpServer's generated users file <name>-generated-users (docs/users.md), with the probe on
# its probe account <name>-probe (docs/probe.md), and with SFTP its host keys
# <name>-sftp-host-keys, created once and never patched, so every replica keeps presenting the
# same keys (docs/sftp.md).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch"]
# FtpUsers are gathered into their server's users file, and each gets a status.
- apiGroups: ["ftpoperator.dev"]
  resources: ["ftpusers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ftpoperator.dev"]
  resources: ["ftpusers/status"]
  verbs: ["get", "update", "patch"]
# The servers' pods, read for why a rollout does not finish (image pulls, scheduling).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Ready waits until each server pod (found by label) serves the rendered configuration; a
# lagging pod gets an annotation, which makes the kubelet refresh its mounted ConfigMap at once.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "patch"]
{{- end }}
