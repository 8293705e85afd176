package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// TestParallelStarts starts many simulated MIG nodes at once, each with its
// own API server binding a port of the kernel's choosing while the exporter
// takes its listener: every one must come up and serve its own node. A
// launcher that chose a port and let it go before the exporter bound it
// lost it to such a bind now and then.
func TestParallelStarts(t *testing.T) {
	scenario := filepath.Join(tooltest.RepoRoot(), "examples", "mig-node.yaml")
	for i := range 12 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			e := startExporter(t, "--simulate.scenario="+scenario)
			if raw := scrape(t, e.Addr); !strings.Contains(raw, `kube_gpu_exporter_up{source="nvml"} 1`) {
				t.Fatalf("exporter %d serves no NVML data:\n%s", i, raw)
			}
		})
	}
}
