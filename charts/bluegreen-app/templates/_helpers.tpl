{{/*
The app name: Deployments <app>-blue/-green, Services <app>/<app>-preview, Lease <app>-release.
At most 55 characters, so "<app>-preview" and "<app>-release" stay valid DNS-1123 labels (63).
*/}}
{{- define "bluegreen-app.name" -}}
{{- $name := .Values.app | default .Release.Name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "app %q is not a DNS-1123 label: use lower-case letters, digits and '-'" $name) -}}
{{- end -}}
{{- if gt (len $name) 55 -}}
{{- fail (printf "app %q is longer than 55 characters; <app>-preview must fit in 63" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* Labels on every object (not selectors: those must stay exactly app + slot). */}}
{{- define "bluegreen-app.labels" -}}
app: {{ include "bluegreen-app.name" . }}
app.kubernetes.io/name: {{ include "bluegreen-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: releasegate
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "bluegreen-app.otherSlot" -}}
{{- if eq . "blue" }}green{{ else if eq . "green" }}blue{{ else }}{{ fail (printf "slot %q is neither blue nor green" .) }}{{ end -}}
{{- end -}}

{{/*
The slot a Service selects: its current selector when preserveReleaseState and the Service exists (releasegate
moved it), else `default`. Called with (dict "root" $ "service" NAME "default" SLOT).
*/}}
{{- define "bluegreen-app.selectedSlot" -}}
{{- $slot := .default -}}
{{- $root := .root -}}
{{- if $root.Values.preserveReleaseState -}}
{{- $service := lookup "v1" "Service" $root.Release.Namespace .service -}}
{{- $selector := dig "spec" "selector" dict $service -}}
{{- if hasKey $selector $root.Values.labels.slot -}}
{{- $slot = index $selector $root.Values.labels.slot -}}
{{- end -}}
{{- end -}}
{{- $_ := include "bluegreen-app.otherSlot" $slot -}}{{/* fails unless blue or green */}}
{{- $slot -}}
{{- end -}}

{{- define "bluegreen-app.liveSlot" -}}
{{- $app := include "bluegreen-app.name" . -}}
{{- include "bluegreen-app.selectedSlot" (dict "root" . "service" $app "default" .Values.liveSlot) -}}
{{- end -}}

{{- define "bluegreen-app.previewSlot" -}}
{{- $app := include "bluegreen-app.name" . -}}
{{- $default := .Values.preview.slot | default (include "bluegreen-app.otherSlot" (include "bluegreen-app.liveSlot" .)) -}}
{{- include "bluegreen-app.selectedSlot" (dict "root" . "service" (printf "%s-preview" $app) "default" $default) -}}
{{- end -}}

{{/*
What one slot's Deployment runs, as YAML {version, replicas}. Called with (dict "root" $ "slot" SLOT).
The live slot gets .Values.replicas; the idle one keeps its current count (0 after releasegate scaled it
down), so an upgrade neither revives an old slot nor scales the live one to the idle count.
*/}}
{{- define "bluegreen-app.slotState" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $isLive := eq .slot (include "bluegreen-app.liveSlot" $root) -}}
{{- $version := $values.version -}}
{{- $replicas := $values.replicas -}}
{{- $existingVersion := "" -}}
{{- if not $isLive -}}
{{- $version = $values.idle.version | default $values.version -}}
{{- $replicas = $values.idle.replicas -}}
{{- end -}}
{{- if $values.preserveReleaseState -}}
{{- $name := printf "%s-%s" (include "bluegreen-app.name" $root) .slot -}}
{{- $existing := lookup "apps/v1" "Deployment" $root.Release.Namespace $name -}}
{{- if $existing -}}
{{- $labels := dig "spec" "template" "metadata" "labels" dict $existing -}}
{{- if hasKey $labels $values.labels.version -}}
{{- $version = index $labels $values.labels.version -}}
{{- $existingVersion = $version -}}
{{- end -}}
{{- if not $isLive -}}
{{- $replicas = dig "spec" "replicas" 1 $existing -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $values.firstDeploy (not $existingVersion) -}}
{{- $version = "" -}}
{{- $replicas = 0 -}}
{{- else if not $version -}}
{{- fail "version is empty: set the version the live slot runs (e.g. --set version=v1), or firstDeploy=true to install no version" -}}
{{- end -}}
version: {{ $version | toString | quote }}
replicas: {{ $replicas | int }}
{{- end -}}

{{- define "bluegreen-app.serviceAccountName" -}}
{{- .Values.rbac.serviceAccount.name | default (printf "%s-releasegate" (include "bluegreen-app.name" .)) -}}
{{- end -}}

{{/* A pod label key as Prometheus' Kubernetes discovery names it: every other character becomes "_". */}}
{{- define "bluegreen-app.podLabelMeta" -}}
{{- printf "__meta_kubernetes_pod_label_%s" (regexReplaceAll "[^a-zA-Z0-9_]" . "_") -}}
{{- end -}}

{{/*
The runner's namespaced rules, from files/runner-rules.yaml. A verb that acts on one named object (get,
update, patch, delete) is restricted to the app's own objects with resourceNames; create and list cannot
be (the API server authorizes them before a name exists), so they stay in a rule of their own.
*/}}
{{- define "bluegreen-app.runnerRules" -}}
{{- $app := include "bluegreen-app.name" . -}}
{{- $slots := list (printf "%s-blue" $app) (printf "%s-green" $app) -}}
{{- $names := dict "deployments" $slots "deployments/scale" $slots "services" (list $app (printf "%s-preview" $app)) "leases" (list (printf "%s-release" $app)) -}}
{{- $nameable := list "get" "update" "patch" "delete" -}}
{{- $file := .Files.Get "files/runner-rules.yaml" | fromYaml -}}
{{- $source := $file.namespaced -}}
{{- if .Values.rbac.portForward -}}
{{- $source = concat $source $file.portForward -}}
{{- end -}}
{{- if .Values.rbac.loadWorkers -}}
{{- $source = concat $source $file.loadWorkers -}}
{{- end -}}
{{- $rules := list -}}
{{- range $rule := $source -}}
{{- if ne (len $rule.resources) 1 -}}
{{- fail "files/runner-rules.yaml: one resource per rule, so resourceNames can be chosen per resource" -}}
{{- end -}}
{{- $resource := first $rule.resources -}}
{{- $named := list -}}
{{- $open := list -}}
{{- range $verb := $rule.verbs -}}
{{- if and (hasKey $names $resource) (has $verb $nameable) -}}
{{- $named = append $named $verb -}}
{{- else -}}
{{- $open = append $open $verb -}}
{{- end -}}
{{- end -}}
{{- if $open -}}
{{- $rules = append $rules (dict "apiGroups" $rule.apiGroups "resources" $rule.resources "verbs" $open) -}}
{{- end -}}
{{- if $named -}}
{{- $rules = append $rules (dict "apiGroups" $rule.apiGroups "resources" $rule.resources "resourceNames" (get $names $resource) "verbs" $named) -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* The cluster-scoped rules, each restricted to this release's namespace. */}}
{{- define "bluegreen-app.runnerClusterRules" -}}
{{- $file := .Files.Get "files/runner-rules.yaml" | fromYaml -}}
{{- $rules := list -}}
{{- range $rule := $file.cluster -}}
{{- $rules = append $rules (merge (dict "resourceNames" (list $.Release.Namespace)) $rule) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
