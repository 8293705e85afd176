// Package scale measures what a fleet of exporters costs the systems around
// it: the series each kind of node serves (checked against a budget in
// testdata, and the tables of docs/scale.md generated from the same runs),
// the labels each series carries (under the limits of the long-term stores),
// and, in benchmarks outside `make test`, a real kube-apiserver serving many
// nodes' pod watches (scripts/scale-bench.sh runs them with the Prometheus
// measurement).
package scale
