// Package dashboards holds the Grafana dashboards for kube-gpu-exporter.
//
// The JSON files in this directory are generated from the Go definitions in
// this package, which keep units, thresholds and data source references
// consistent across panels. After changing a definition, regenerate them
// with
//
//	go test ./dashboards -run TestGenerated -update
//
// and the tests check that every PromQL expression returns data from a
// Prometheus scraping the exporter's simulated node.
package dashboards

import (
	"bytes"
	"embed"
	"encoding/json"
)

// Files are the committed dashboard files, for programs that install them.
//
//go:embed *.json
var Files embed.FS

// Definition pairs a dashboard with the file it is written to.
type Definition struct {
	File      string
	Dashboard *Dashboard
}

// All returns every dashboard of the project.
func All() []Definition {
	return []Definition{
		{File: "kube-gpu-exporter-cluster.json", Dashboard: Cluster()},
		{File: "kube-gpu-exporter-node.json", Dashboard: Node()},
		{File: "kube-gpu-exporter-workload.json", Dashboard: Workload()},
		{File: "kube-gpu-exporter-cost.json", Dashboard: Cost()},
	}
}

// Marshal renders a dashboard as Grafana's export format does: indented
// JSON with a trailing newline, HTML characters unescaped so that PromQL
// comparisons stay readable.
func Marshal(d *Dashboard) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
