//go:build gpu

package gpu

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// testRealMIG is the MIG case, run when GPU 0 is already partitioned (the
// test never changes that). The fake kubelet hands the first instance to
// the test container; the exporter must list every instance nvidia-smi
// lists, serve the parent's memory (read with MIG-monitor privilege, or the
// sum of its instances without it), and see the load's memory on the
// instance it runs on. The parent's telemetry is then compared family by
// family as on a whole GPU.
func testRealMIG(t *testing.T, smi func(...string) *exec.Cmd, gpu gpuInfo) {
	list, err := runSMI(smi("-L"))
	if err != nil {
		t.Fatal(err)
	}
	migs := parseMIGList(list, gpu.UUID)
	if len(migs) == 0 {
		t.Fatalf("MIG is enabled on GPU 0 but nvidia-smi -L lists no instance under %s:\n%s", gpu.UUID, list)
	}
	inst := migs[0]
	loadName, load := pickLoad(t, inst.UUID)
	h := &harness{
		mode: "real GPU, MIG", exporter: exporterBinary(t), extraArgs: []string{"--kubeconfig=" + apiKubeconfig(t)},
		window: 10 * time.Second, poll: time.Second, settle: 4 * time.Second, sampleEvery: time.Second,
		memoryMiB: 2048, scrapes: 50, smiRuns: 5, readyTimeout: 90 * time.Second,
		smi: smi, load: load, loadName: loadName, mig: true,
	}
	socket := startFakeKubelet(t, inst.UUID)
	e := startExporter(t, h.exporter, append([]string{
		"--kube.node-name=" + testNode, "--kubelet.pod-resources-socket=" + socket,
		"--nvml.duty-cycle-window=" + h.window.String(), "--nvml.poll-interval=" + h.poll.String(),
	}, h.extraArgs...)...)
	cont := map[string]string{"namespace": testNamespace, "pod": testPod, "container": testContainer, "gpu_id": inst.UUID}
	idle := waitForSeries(t, e, "containerGpumemoryUsedBytes", cont)

	rep := &report{Mode: h.mode, LoadName: loadName, GPU: gpu, Window: h.window, Poll: h.poll, MemoryMiB: h.memoryMiB}
	body, err := e.scrape()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := parseExposition(body)
	if err != nil {
		t.Fatal(err)
	}
	var missing, names []string
	for _, m := range migs {
		names = append(names, m.Profile)
		if _, err := find(ss, "nodeGpumemoryTotalBytes", map[string]string{"gpu_id": m.UUID}); err != nil {
			missing = append(missing, m.UUID)
		}
	}
	parent, perr := find(ss, "nodeGpumemoryUsedBytes", map[string]string{"gpu_id": gpu.UUID})
	rep.Modes = append(rep.Modes,
		row{what: "MIG instances", exporter: fmt.Sprintf("%d of %d served, missing %v", len(migs)-len(missing), len(migs), missing),
			smi: strings.Join(names, " "), target: "every instance nvidia-smi -L lists", ok: verdict(len(missing) == 0)},
		row{what: "MIG parent memory used", exporter: present(parent, perr, 1<<20, "MiB"), target: "served (privileged, or the sum of its instances)", ok: verdict(perr == nil)},
	)

	fam := h.startFamilies(t, e)
	l := startLoad(t, h.load(50, (h.settle+h.window+time.Minute).Seconds(), h.memoryMiB), h.readyTimeout)
	time.Sleep(h.settle + 2*h.poll)
	body, err = e.scrape()
	l.stop()
	if err != nil {
		t.Fatal(err)
	}
	if ss, err = parseExposition(body); err != nil {
		t.Fatal(err)
	}
	used, uerr := find(ss, "containerGpumemoryUsedBytes", cont)
	grew := (used - idle) / (1 << 20)
	rep.Modes = append(rep.Modes, row{
		what: "load's memory on " + inst.Profile, exporter: fmt.Sprintf("+%.0f MiB (%s)", grew, present(used, uerr, 1<<20, "MiB")),
		intended: fmt.Sprintf("≥ %d MiB held", h.memoryMiB), target: "the instance's memory grows by what the load holds",
		ok: verdict(uerr == nil && grew >= float64(h.memoryMiB)),
	}, notInMode("MPS", "MIG case"))
	rep.Families = h.checkFamilies(t, e, gpu.UUID, fam)
	h.measureLatency(t, e, rep)
	rep.publish(t, "gpu-validation-real-mig.md")
	for _, f := range rep.failures() {
		t.Error(f)
	}
}

func present(v float64, err error, scale float64, unit string) string {
	if err != nil {
		return "absent"
	}
	return fmt.Sprintf("%.1f %s", v/scale, unit)
}
