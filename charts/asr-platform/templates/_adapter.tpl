{{/*
prometheus-adapter custom-metrics rule for the HPA engine: asr_queue_depth per pod, as a Pods metric.
Used by prometheus-adapter-configmap.yaml and NOTES.txt.
*/}}
{{- define "asr-platform.prometheusAdapterRules" -}}
rules:
  - seriesQuery: 'asr_queue_depth{namespace!="",pod!=""}'
    resources:
      overrides:
        namespace:
          resource: namespace
        pod:
          resource: pod
    name:
      matches: "^asr_queue_depth$"
      as: "asr_queue_depth"
    # max by (namespace, pod) first: a pod scraped by both a ServiceMonitor and its prometheus.io annotations
    # has two series (one per job), and a plain sum would report twice its queue.
    metricsQuery: 'sum(max by (namespace, pod) (<<.Series>>{<<.LabelMatchers>>})) by (<<.GroupBy>>)'
{{- end }}
