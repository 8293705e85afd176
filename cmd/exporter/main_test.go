package main

import (
	"os"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// TestMain removes the binaries the tests built and fails the run if a
// simulated node's temporary directory outlives the tests: every binary
// they start must be stopped, not killed.
func TestMain(m *testing.M) {
	os.Exit(testkit.RunLeakChecked(m, tooltest.RemoveBuilt))
}
