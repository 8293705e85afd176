// Command kubectl-gpu is a kubectl plugin: `kubectl gpu top nodes` and
// `kubectl gpu top pods` show the cluster's GPUs as kube-gpu-exporter
// reports them, in the shape of `kubectl top`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/gputop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command with its arguments and outputs, for the tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("kubectl-gpu", "GPUs of a Kubernetes cluster as kube-gpu-exporter reports them.").UsageWriter(stderr).ErrorWriter(stderr)
	app.Terminate(nil)
	o := gputop.Options{Warnings: stderr}
	app.Flag("prometheus-url", "Prometheus to ask (its base URL); without it, the Prometheus services found through the API server are asked.").StringVar(&o.PrometheusURL)
	app.Flag("prometheus-selector", "Label selector of the Prometheus services looked for through the API server.").Default("app.kubernetes.io/name=prometheus").StringVar(&o.PrometheusSelector)
	app.Flag("exporter-selector", "Label selector of the exporter pods scraped through the API server's pod proxy when no Prometheus answers.").Default("app.kubernetes.io/name=kube-gpu-exporter").StringVar(&o.ExporterSelector)
	app.Flag("kubeconfig", "Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).").StringVar(&o.Kubeconfig)
	app.Flag("context", "The kubeconfig context to use.").StringVar(&o.Context)
	app.Flag("output", "Output format: a table (default) or json.").Short('o').EnumVar(&o.Output, "", "json")
	app.Flag("request-timeout", "Give up after this long.").Default("30s").DurationVar(&o.Timeout)

	top := app.Command("top", "Show GPU use per node or per pod.")
	top.Command("nodes", "GPUs per node: held and free, duty cycle, memory, power, health.").Alias("node")
	pods := top.Command("pods", "GPUs per pod: how many, duty cycle, memory, power, health.").Alias("pod")
	pods.Flag("namespace", "Namespace of the pods (default: the context's).").Short('n').StringVar(&o.Namespace)
	pods.Flag("all-namespaces", "Pods of every namespace.").Short('A').BoolVar(&o.AllNamespaces)

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "kubectl-gpu: %v\n", err)
		return 2
	}
	if cmd == "" {
		return 0 // --help
	}
	view := gputop.TopNodes
	if cmd == pods.FullCommand() {
		view = gputop.TopPods
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if err := gputop.Run(ctx, view, o, stdout); err != nil {
		fmt.Fprintf(stderr, "kubectl-gpu: %v\n", err)
		return 1
	}
	return 0
}
