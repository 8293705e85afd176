// Command kube-gpu-exporter serves per-container and per-node GPU metrics
// (the Container Insights GPU metric set) for one Kubernetes node, from NVML,
// the kubelet's pod-resources socket and, when available, the Kubernetes API.
// The simulated node is a separate command, kube-gpu-exporter-sim, so that
// this binary carries no simulator.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/exporter"
)

func main() {
	o, app, err := exporter.Parse(os.Args[1:])
	if err != nil {
		app.Fatalf("%v", err)
	}
	logger := o.Logger()
	// SIGHUP (a closed terminal) stops the process like SIGTERM, with its
	// cleanup, rather than killing it mid-scrape; nothing is reloaded.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := exporter.Run(ctx, o, exporter.Sources{NVML: gonvml.New()}, logger); err != nil {
		logger.Error("exiting", "err", err)
		stop()
		os.Exit(1)
	}
}
