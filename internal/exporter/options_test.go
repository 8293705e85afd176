package exporter

import (
	"log/slog"
	"slices"
	"testing"
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
