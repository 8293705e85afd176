package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// The production binary must not link the simulator: go-nvml's mocks and
// the simulate package are megabytes that no real node runs
// (kube-gpu-exporter-sim carries them).
func TestProductionBinaryLinksNoSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	cmd := exec.Command("go", "list", "-deps", "./cmd/exporter")
	cmd.Dir = tooltest.RepoRoot()
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/exporter: %v", err)
	}
	forbidden := []string{
		"github.com/NVIDIA/go-nvml/pkg/nvml/mock",
		"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 || !slices.Contains(pkgs, "github.com/NVIDIA/go-nvml/pkg/nvml") {
		t.Fatalf("go list -deps returned %d packages without go-nvml: the check would prove nothing", len(pkgs))
	}
	for _, p := range pkgs {
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("./cmd/exporter links %s", p)
			}
		}
	}
}
