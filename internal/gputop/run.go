package gputop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Options are `kubectl gpu top`'s flags.
type Options struct {
	// PrometheusURL, when set, is the Prometheus asked first.
	PrometheusURL string
	// PrometheusSelector labels the Prometheus services looked for
	// through the API server when no URL is given.
	PrometheusSelector string
	// ExporterSelector labels the exporter pods scraped through the pod
	// proxy when no Prometheus answers.
	ExporterSelector string
	Kubeconfig       string
	Context          string
	// Namespace filters `top pods`; "" is the context's namespace.
	Namespace     string
	AllNamespaces bool
	// Output is "" (a table) or "json".
	Output  string
	Timeout time.Duration
	// Warnings receives what the output lacks (exporters that did not
	// answer); nil discards it.
	Warnings io.Writer
}

// View is what to show.
type View int

// The views.
const (
	TopNodes View = iota
	TopPods
)

// tried collects what was asked and why it did not answer, for the error
// when nothing does.
type tried []string

func (t *tried) add(what string, err error) { *t = append(*t, fmt.Sprintf("%s: %v", what, err)) }

func (t tried) err() error {
	return fmt.Errorf("no GPU metrics found; tried:\n  - %s", strings.Join(t, "\n  - "))
}

// Run shows view on w. It asks the Prometheus of --prometheus-url, else
// the Prometheus services the API server lists, and falls back to the
// exporter pods through the pod proxy; the error, when none answers, names
// each one tried and why it failed.
func Run(ctx context.Context, view View, o Options, w io.Writer) error {
	if o.Output != "" && o.Output != "json" {
		return fmt.Errorf("--output: %q is not json", o.Output)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	var tr tried
	cluster, clusterErr := LoadCluster(o.Kubeconfig, o.Context)

	namespace := ""
	if view == TopPods && !o.AllNamespaces {
		namespace = o.Namespace
		if namespace == "" {
			if cluster == nil {
				return fmt.Errorf("top pods: no namespace: give -n or -A (%w)", clusterErr)
			}
			namespace = cluster.Namespace
		}
	}
	qs := NodeQueries()
	if view == TopPods {
		qs = PodQueries(namespace)
	}

	var sources []func() (Source, error)
	if o.PrometheusURL != "" {
		sources = append(sources, func() (Source, error) {
			return &Prometheus{URL: o.PrometheusURL, Client: &http.Client{}, Name: "Prometheus at " + o.PrometheusURL}, nil
		})
	}
	if cluster == nil {
		tr.add("the Kubernetes API", clusterErr)
	} else {
		if o.PrometheusURL == "" {
			proms, err := cluster.PrometheusServices(ctx, o.PrometheusSelector)
			switch {
			case err != nil:
				tr.add("Prometheus services", err)
			case len(proms) == 0:
				tr.add("Prometheus services", fmt.Errorf("none labelled %s", o.PrometheusSelector))
			}
			for _, p := range proms {
				sources = append(sources, func() (Source, error) { return p, nil })
			}
		}
		sources = append(sources, func() (Source, error) { return cluster.Exporters(ctx, o.ExporterSelector) })
	}

	for _, next := range sources {
		src, err := next()
		if err != nil {
			tr.add("exporter pods", err)
			continue
		}
		res, err := src.Fetch(ctx, qs)
		if err != nil {
			tr.add(src.String(), err)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return tr.err()
			}
			continue
		}
		if o.Warnings != nil {
			for _, m := range res.Missed {
				fmt.Fprintf(o.Warnings, "warning: %s did not answer in full: %s\n", src, m)
			}
		}
		return show(w, view, o, namespace == "", src.String(), res)
	}
	return tr.err()
}

func show(w io.Writer, view View, o Options, allNamespaces bool, source string, res Results) error {
	rep := Report{Source: source}
	switch view {
	case TopNodes:
		rep.Nodes = Nodes(res)
		if o.Output == "json" {
			return WriteJSON(w, rep)
		}
		return WriteNodes(w, rep.Nodes)
	default:
		rep.Pods = Pods(res)
		if o.Output == "json" {
			return WriteJSON(w, rep)
		}
		if len(rep.Pods) == 0 {
			_, err := fmt.Fprintln(w, "No pods hold GPUs.")
			return err
		}
		return WritePods(w, rep.Pods, allNamespaces)
	}
}
