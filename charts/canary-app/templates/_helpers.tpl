{{/*
The app name: Deployments and Services <app>-stable/-canary, Service <app>, Lease <app>-release. At most 55
characters, so "<app>-release" stays a DNS-1123 label (63) and "actions.<app>" a valid annotation name (63).
*/}}
{{- define "canary-app.name" -}}
{{- $name := .Values.app | default .Release.Name -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "app %q is not a DNS-1035 label: start with a letter, use lower-case letters, digits and '-'" $name) -}}
{{- end -}}
{{- if gt (len $name) 55 -}}
{{- fail (printf "app %q is longer than 55 characters; <app>-release and actions.<app> must fit in 63" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* replicas or alb; anything else fails the render. */}}
{{- define "canary-app.traffic" -}}
{{- if not (has .Values.traffic (list "replicas" "alb")) -}}
{{- fail (printf "traffic %q is neither replicas nor alb" (toString .Values.traffic)) -}}
{{- end -}}
{{- .Values.traffic -}}
{{- end -}}

{{/* Labels on every object (not selectors: those must stay exactly app + slot). */}}
{{- define "canary-app.labels" -}}
app: {{ include "canary-app.name" . }}
app.kubernetes.io/name: {{ include "canary-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: releasegate
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
What one slot's Deployment runs, as YAML {version, replicas}. Called with (dict "root" $ "slot" SLOT).
Stable gets .Values.replicas; the canary keeps its current count (0 after a release), so an upgrade neither
revives an old canary nor changes the replica weights of a release in progress.
*/}}
{{- define "canary-app.slotState" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $version := $values.version -}}
{{- $replicas := $values.replicas -}}
{{- $existingVersion := "" -}}
{{- if eq .slot "canary" -}}
{{- $version = $values.canary.version | default $values.version -}}
{{- $replicas = $values.canary.replicas -}}
{{- end -}}
{{- if $values.preserveReleaseState -}}
{{- $name := printf "%s-%s" (include "canary-app.name" $root) .slot -}}
{{- $existing := lookup "apps/v1" "Deployment" $root.Release.Namespace $name -}}
{{- if $existing -}}
{{- $labels := dig "spec" "template" "metadata" "labels" dict $existing -}}
{{- if hasKey $labels $values.labels.version -}}
{{- $version = index $labels $values.labels.version -}}
{{- $existingVersion = $version -}}
{{- end -}}
{{- if eq .slot "canary" -}}
{{- $replicas = dig "spec" "replicas" 1 $existing -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $values.firstDeploy (not $existingVersion) -}}
{{- $version = "" -}}
{{- $replicas = 0 -}}
{{- else if not $version -}}
{{- fail "version is empty: set the version the stable Deployment runs (e.g. --set version=v1), or firstDeploy=true to install no version" -}}
{{- end -}}
version: {{ $version | toString | quote }}
replicas: {{ $replicas | int }}
{{- end -}}

{{- define "canary-app.serviceAccountName" -}}
{{- .Values.rbac.serviceAccount.name | default (printf "%s-releasegate" (include "canary-app.name" .)) -}}
{{- end -}}

{{/* A pod label key as Prometheus' Kubernetes discovery names it: every other character becomes "_". */}}
{{- define "canary-app.podLabelMeta" -}}
{{- printf "__meta_kubernetes_pod_label_%s" (regexReplaceAll "[^a-zA-Z0-9_]" . "_") -}}
{{- end -}}

{{- define "canary-app.ingressName" -}}
{{- .Values.ingress.name | default (include "canary-app.name" .) -}}
{{- end -}}

{{/* alb.ingress.kubernetes.io/actions.<app>: the action the Ingress rule's `use-annotation` backend names. */}}
{{- define "canary-app.actionKey" -}}
{{- printf "%s/actions.%s" (.Values.ingress.annotationPrefix | trimSuffix "/") (include "canary-app.name" .) -}}
{{- end -}}

{{/*
All traffic on stable: byte for byte what targets/kubernetes/alb.py forward_action(<app>-stable, <app>-canary,
service.port, 0) writes (Argo Rollouts' format; the weight 0 is written, argo-rollouts#491). A dict through
toJson would sort the keys; the controller would not mind, but releasegate compares the annotation verbatim.
*/}}
{{- define "canary-app.initialAction" -}}
{{- $app := include "canary-app.name" . -}}
{{- $port := .Values.service.port | int | toString -}}
{{- printf "{\"Type\":\"forward\",\"ForwardConfig\":{\"TargetGroups\":[{\"ServiceName\":\"%s-canary\",\"ServicePort\":\"%s\",\"Weight\":0},{\"ServiceName\":\"%s-stable\",\"ServicePort\":\"%s\",\"Weight\":100}]}}" $app $port $app $port -}}
{{- end -}}

{{/* The action annotation's value: the live one when preserveReleaseState and the Ingress has it, else stable 100. */}}
{{- define "canary-app.action" -}}
{{- $key := include "canary-app.actionKey" . -}}
{{- $action := include "canary-app.initialAction" . -}}
{{- if .Values.preserveReleaseState -}}
{{- $existing := lookup "networking.k8s.io/v1" "Ingress" .Release.Namespace (include "canary-app.ingressName" .) -}}
{{- $annotations := dig "metadata" "annotations" dict $existing -}}
{{- if hasKey $annotations $key -}}
{{- $action = index $annotations $key -}}
{{- end -}}
{{- end -}}
{{- $action -}}
{{- end -}}

{{/*
The runner's rules file: files/rollout-rules.yaml with rbac.rollout.enabled (the Argo Rollouts target), else
files/runner-rules.yaml (the Deployment targets). Both have `namespaced` and `cluster` sections.
*/}}
{{- define "canary-app.rulesFile" -}}
{{- if .Values.rbac.rollout.enabled -}}files/rollout-rules.yaml{{- else -}}files/runner-rules.yaml{{- end -}}
{{- end -}}

{{/*
The runner's namespaced rules, from its rules file (plus the `alb` section of files/runner-rules.yaml with
traffic=alb, its `portForward` section with rbac.portForward, and its `loadWorkers` section with rbac.loadWorkers). A verb that acts on one named object (get,
update, patch, delete) is restricted to the app's own objects with resourceNames; create and list cannot be (the
API server authorizes them before a name exists). With rbac.rollout.enabled: the Rollout rbac.rollout.name and
the Services <app>, <app>-stable, <app>-canary and rbac.rollout.services; no Ingress rule (the Rollouts controller
sets ALB weights itself).
*/}}
{{- define "canary-app.runnerRules" -}}
{{- $app := include "canary-app.name" . -}}
{{- $rollout := .Values.rbac.rollout.enabled -}}
{{- $slots := list (printf "%s-stable" $app) (printf "%s-canary" $app) -}}
{{- $services := list $app (printf "%s-stable" $app) (printf "%s-canary" $app) -}}
{{- $rolloutName := .Values.rbac.rollout.name | default $app -}}
{{- if $rollout -}}
{{- $services = concat $services .Values.rbac.rollout.services | uniq -}}
{{- end -}}
{{- $names := dict "deployments" $slots "deployments/scale" $slots "services" $services "leases" (list (printf "%s-release" $app)) "horizontalpodautoscalers" (list (printf "%s-canary" $app)) "ingresses" (list (include "canary-app.ingressName" .)) "rollouts" (list $rolloutName) "rollouts/status" (list $rolloutName) -}}
{{- $nameable := list "get" "update" "patch" "delete" -}}
{{- $deploymentRules := .Files.Get "files/runner-rules.yaml" | fromYaml -}}
{{- $file := .Files.Get (include "canary-app.rulesFile" .) | fromYaml -}}
{{- $source := $file.namespaced -}}
{{- if and (not $rollout) (eq (include "canary-app.traffic" .) "alb") -}}
{{- $source = concat $source $deploymentRules.alb -}}
{{- end -}}
{{- if .Values.rbac.portForward -}}
{{- $source = concat $source $deploymentRules.portForward -}}
{{- end -}}
{{- if .Values.rbac.loadWorkers -}}
{{- $source = concat $source $deploymentRules.loadWorkers -}}
{{- end -}}
{{- $rules := list -}}
{{- range $rule := $source -}}
{{- if ne (len $rule.resources) 1 -}}
{{- fail "files/*-rules.yaml: one resource per rule, so resourceNames can be chosen per resource" -}}
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
{{- define "canary-app.runnerClusterRules" -}}
{{- $file := .Files.Get (include "canary-app.rulesFile" .) | fromYaml -}}
{{- $rules := list -}}
{{- range $rule := $file.cluster -}}
{{- $rules = append $rules (merge (dict "resourceNames" (list $.Release.Namespace)) $rule) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
