{{/*
prometheus-adapter custom-metrics rule for the HPA engine: asr_load (queued work + realtime streams) per pod,
as a Pods metric.
Used by prometheus-adapter-configmap.yaml and NOTES.txt.
*/}}
{{- define "asr-platform.prometheusAdapterRules" -}}
rules:
  - seriesQuery: 'asr_load{namespace!="",pod!=""}'
    resources:
      overrides:
        namespace:
          resource: namespace
        pod:
          resource: pod
    name:
      matches: "^asr_load$"
      as: "asr_load"
    # max by (namespace, pod) first: a pod scraped by both a ServiceMonitor and its prometheus.io annotations
    # has two series (one per job), and a plain sum would report twice its load.
    metricsQuery: 'sum(max by (namespace, pod) (<<.Series>>{<<.LabelMatchers>>})) by (<<.GroupBy>>)'
{{- end }}
