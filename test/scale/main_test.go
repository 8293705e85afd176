package scale

import (
	"os"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	tooltest.RemoveBuilt()
	os.Exit(code)
}
