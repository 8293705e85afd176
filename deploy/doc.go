// Package deploy holds no code: its tests check the deployment artifacts
// under this directory (Prometheus rules, the Helm chart, the kustomize base)
// with promtool, helm and kustomize, and against the exporter's flags.
package deploy
