package exporter

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/units"
	"go.yaml.in/yaml/v2"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// A source's socket, procfs and DRA driver replace or extend the flags; its
// node name only fills an unset --kube.node-name; the parsed Options stay
// as the flags set them.
func TestSourcesOverrideFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "") // --kube.node-name's environment variable
	logger := slog.New(slog.DiscardHandler)
	o, _, err := Parse([]string{"--kube.node-name=flag-node", "--dra.driver=a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	src := Sources{Socket: "/sim/kubelet.sock", Procfs: "/sim/proc", NodeName: "sim-node", DRADrivers: []string{"b.example.com", "a.example.com"}}
	got, err := o.with(src, logger)
	if err != nil {
		t.Fatal(err)
	}
	if got.socket != src.Socket || got.procfs != src.Procfs || got.nodeName != "flag-node" {
		t.Errorf("socket %q procfs %q node %q", got.socket, got.procfs, got.nodeName)
	}
	if !got.draEnabled || !slices.Equal(got.draDrivers, []string{"a.example.com", "b.example.com"}) {
		t.Errorf("DRA enabled %v drivers %v, want true and each driver once", got.draEnabled, got.draDrivers)
	}
	if o.draEnabled || len(o.draDrivers) != 1 || o.socket == src.Socket || o.procfs == src.Procfs {
		t.Errorf("the parsed options changed: %+v", o)
	}

	o, _, err = Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = o.with(Sources{NodeName: "sim-node"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if got.nodeName != "sim-node" || got.draEnabled || got.socket != o.socket || got.procfs != "/proc" {
		t.Errorf("without overrides: node %q DRA %v socket %q procfs %q", got.nodeName, got.draEnabled, got.socket, got.procfs)
	}
}

// Values kingpin accepts but that break the exporter later (a panic at
// start, a path serving more than itself, a random port, label values that
// are not UTF-8, a sampler busy polling or keeping days of samples) are
// refused by Parse with a message naming the flag.
func TestValidateRefusesHarmfulValues(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	for _, tc := range []struct{ arg, flag string }{
		{"--nvml.poll-interval=1ns", "--nvml.poll-interval"},
		{"--nvml.duty-cycle-window=1000000h", "--nvml.duty-cycle-window"},
		{"--web.telemetry-path=//metrics", "--web.telemetry-path"},
		{"--web.telemetry-path=/./metrics", "--web.telemetry-path"},
		{"--web.telemetry-path=/{bad", "--web.telemetry-path"},
		{"--web.telemetry-path=/{x}/{x}", "--web.telemetry-path"},
		{"--web.telemetry-path=/m/", "--web.telemetry-path"},
		{"--web.telemetry-path=/metrics/{x}", "--web.telemetry-path"},
		{"--web.telemetry-path=/a b", "--web.telemetry-path"},
		{"--web.listen-address=", "--web.listen-address"},
		{"--web.listen-address=127.0.0.1:", "--web.listen-address"},
		{"--web.listen-address=:0", "--web.listen-address"},
		{"--cluster.name=a\xffb", "--cluster.name"},
		{"--cluster.id=\xff", "--cluster.id"},
		{"--kube.node-name=n\xff", "--kube.node-name"},
		{"--web.max-connections=-1", "--web.max-connections"},
	} {
		_, _, err := Parse([]string{tc.arg})
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%q: error %v, want one naming %s", tc.arg, err, tc.flag)
		}
	}
	for _, ok := range []string{"--web.telemetry-path=/metrics", "--web.telemetry-path=/gpu/metrics_v1", "--nvml.poll-interval=100ms", "--nvml.duty-cycle-window=1h", "--web.listen-address=[::1]:9871", "--cluster.name=dé"} {
		if _, _, err := Parse([]string{ok}); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}

// The default --kubelet.max-recv-msg-size must be a reply the chart's
// memory limit can decode: a larger one is then refused and counted
// (message_too_large) instead of the process being killed for its memory.
func TestDefaultMaxRecvFitsChartMemoryLimit(t *testing.T) {
	o, _, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tooltest.RepoRoot(), "deploy", "helm", "kube-gpu-exporter", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Resources struct {
			Limits struct{ Memory string } `yaml:"limits"`
		} `yaml:"resources"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	limit, err := units.ParseStrictBytes(v.Resources.Limits.Memory + "B")
	if err != nil {
		t.Fatalf("chart memory limit %q: %v", v.Resources.Limits.Memory, err)
	}
	// What the process holds besides the reply: informers, NVML readings,
	// the runtime.
	const rest = 40 << 20
	if need := o.maxRecv*recvCostPerByte + rest; need > limit {
		t.Errorf("a %d MiB reply takes about %d MiB to decode; the chart's limit is %s", o.maxRecv>>20, need>>20, v.Resources.Limits.Memory)
	}
}
