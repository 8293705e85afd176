// Command kube-gpu-exporter-sim is kube-gpu-exporter serving a simulated
// node: go-nvml mocks, a pod-resources socket and, when the scenario has
// pods, an API server, all in memory. It takes every flag of
// kube-gpu-exporter plus --simulate and --simulate.scenario, for demos, the
// end-to-end tests and machines without a GPU (docs/simulation.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/exporter"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

const name = "kube-gpu-exporter-sim"

// simOptions are the flags this command adds to the exporter's.
type simOptions struct {
	builtin  bool
	scenario string
}

func parseFlags(args []string) (*exporter.Options, *simOptions, *kingpin.Application, error) {
	app := kingpin.New(name, "kube-gpu-exporter on a simulated node: "+exporter.Help)
	o := exporter.AddFlags(app)
	s := &simOptions{}
	app.Flag("simulate", "Serve the built-in simulated node (8 GPUs, several pods); the default without --simulate.scenario.").Default("true").BoolVar(&s.builtin)
	app.Flag("simulate.scenario", "Serve a simulated node described by this YAML file (see docs/simulation.md).").PlaceHolder("FILE").StringVar(&s.scenario)
	if _, err := app.Parse(args); err != nil {
		return nil, nil, app, err
	}
	if !s.builtin && s.scenario == "" {
		return nil, nil, app, errors.New("--no-simulate: this command only serves simulated nodes; give --simulate.scenario=FILE, or run kube-gpu-exporter for real hardware")
	}
	return o, s, app, o.Validate()
}

func main() {
	o, s, app, err := parseFlags(os.Args[1:])
	if err != nil {
		app.Fatalf("%v", err)
	}
	logger := o.Logger()
	// SIGHUP (a closed terminal) stops the process like SIGTERM, with its
	// cleanup, rather than killing it mid-scrape; nothing is reloaded.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, o, s, logger); err != nil {
		logger.Error("exiting", "err", err)
		stop()
		os.Exit(1)
	}
}

// run starts the simulated node and serves it until ctx ends.
func run(ctx context.Context, o *exporter.Options, s *simOptions, logger *slog.Logger) error {
	sc := simulate.Builtin()
	if s.scenario != "" {
		var err error
		if sc, err = simulate.Load(s.scenario); err != nil {
			return fmt.Errorf("--simulate.scenario: %w", err)
		}
	}
	node, err := simulate.Start(sc, nil)
	if err != nil {
		return fmt.Errorf("start simulated node: %w", err)
	}
	defer node.Close()
	src := exporter.Sources{
		NVML: node.NVML, Socket: node.Socket, RESTConfig: node.RESTConfig, Procfs: node.ProcRoot, NodeName: node.Name,
	}
	if sc.DRA != nil {
		src.DRADrivers = []string{sc.DRA.Driver}
	}
	logger.Info("serving a simulated node", "node", node.Name, "gpus", sc.GPUs, "pods", len(sc.Pods), "pod_resources_socket", node.Socket)
	return exporter.Run(ctx, o, src, logger)
}
