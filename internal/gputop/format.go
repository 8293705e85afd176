package gputop

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

const unknown = "-"

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 3, ' ', 0) }

func num(p *float64, format string, scale float64) string {
	if p == nil {
		return unknown
	}
	return fmt.Sprintf(format, *p/scale)
}

func pct(part, whole *float64) string {
	if part == nil || whole == nil || *whole <= 0 {
		return unknown
	}
	return fmt.Sprintf("%.0f%%", 100**part / *whole)
}

func count(v float64) string { return fmt.Sprintf("%g", v) }

// health sums a node's GPUs up: "8 healthy", "6 healthy, 1 degraded,
// 1 failed"; nothing known is unknown.
func health(h map[string]int) string {
	var parts []string
	for _, s := range []string{"healthy", "degraded", "failed"} {
		if h[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", h[s], s))
		}
	}
	if len(parts) == 0 {
		return unknown
	}
	return strings.Join(parts, ", ")
}

func hasCluster[T any](rows []T, cluster func(T) string) bool {
	for _, r := range rows {
		if cluster(r) != "" {
			return true
		}
	}
	return false
}

// WriteNodes prints `top nodes` as kubectl top does: one aligned row per
// node; a CLUSTER column only when the series carry cluster_name.
func WriteNodes(w io.Writer, rows []NodeRow) error {
	tw := table(w)
	clusters := hasCluster(rows, func(r NodeRow) string { return r.Cluster })
	if clusters {
		fmt.Fprint(tw, "CLUSTER\t")
	}
	fmt.Fprintln(tw, "NAME\tGPUS\tREQUESTED\tALLOCATABLE\tFREE\tDUTY%\tMEMORY(GiB)\tMEMORY%\tPOWER(W)\tPOWER%\tHEALTH")
	for _, r := range rows {
		if clusters {
			fmt.Fprintf(tw, "%s\t", r.Cluster)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Node, r.GPUs, count(r.Requested), count(r.Allocatable), count(r.Free),
			num(r.DutyCycle, "%.0f%%", 1), num(r.MemoryUsed, "%.1f", 1<<30), pct(r.MemoryUsed, r.MemoryTotal),
			num(r.Power, "%.0f", 1), pct(r.Power, r.PowerLimit), health(r.Health))
	}
	return tw.Flush()
}

// WritePods prints `top pods`; allNamespaces adds the NAMESPACE column, as
// kubectl top pods -A does.
func WritePods(w io.Writer, rows []PodRow, allNamespaces bool) error {
	tw := table(w)
	clusters := hasCluster(rows, func(r PodRow) string { return r.Cluster })
	if clusters {
		fmt.Fprint(tw, "CLUSTER\t")
	}
	if allNamespaces {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprintln(tw, "NAME\tNODE\tGPUS\tDUTY%\tMEMORY(GiB)\tPOWER(W)\tHEALTH")
	for _, r := range rows {
		if clusters {
			fmt.Fprintf(tw, "%s\t", r.Cluster)
		}
		if allNamespaces {
			fmt.Fprintf(tw, "%s\t", r.Namespace)
		}
		h := r.Health
		switch {
		case h == "":
			h = unknown
		case r.Reason != "":
			h += " (" + r.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Pod, r.Node, len(r.GPUs),
			num(r.DutyCycle, "%.0f%%", 1), num(r.MemoryUsed, "%.1f", 1<<30), podPower(r), h)
	}
	return tw.Flush()
}

// podPower is the power of the GPUs a pod holds alone: "shared" when it
// holds none alone, a "*" when it also holds shared ones, whose draw is
// not the pod's.
func podPower(r PodRow) string {
	switch {
	case r.Power == nil && r.PowerPartial:
		return "shared"
	case r.PowerPartial:
		return num(r.Power, "%.0f", 1) + "*"
	}
	return num(r.Power, "%.0f", 1)
}

// Report is the --output json document.
type Report struct {
	// Source says where the numbers came from.
	Source string    `json:"source"`
	Nodes  []NodeRow `json:"nodes,omitempty"`
	Pods   []PodRow  `json:"pods,omitempty"`
}

// WriteJSON prints the report, indented.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
