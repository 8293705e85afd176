package gpu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/resource"
)

// The processes a run starts: the fake kubelet, the exporter and the load.

// fakeKubelet hands the GPU under test to one container, as the kubelet does
// once the device plugin has allocated it, so the exporter's real
// pod-resources client and join run unchanged.
func fakeKubelet(uuid string) *testkit.Kubelet {
	return testkit.NewKubelet(&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{
		Namespace: testNamespace, Name: testPod,
		Containers: []*podresourcesv1.ContainerResources{{
			Name:    testContainer,
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: testResource, DeviceIds: []string{uuid}}},
		}},
	}}}, &podresourcesv1.AllocatableResourcesResponse{
		Devices: []*podresourcesv1.ContainerDevices{{ResourceName: testResource, DeviceIds: []string{uuid}}},
	})
}

// startFakeKubelet serves fakeKubelet on a socket in a short private
// directory (unix socket paths are limited to ~108 bytes), checks it with the
// exporter's own client, and returns the socket.
func startFakeKubelet(t *testing.T, uuid string) string {
	t.Helper()
	_, socket := testkit.ServeKubelet(t, fakeKubelet(uuid))

	c, err := podresources.New(podresources.Config{
		Socket: socket, MaxRecvMsgSize: 4 << 20, Timeout: 5 * time.Second,
		Matcher: resource.MustMatcher(resource.DefaultAll...),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap, err := c.Read(context.Background())
	if err != nil {
		t.Fatalf("fake kubelet: %v", err)
	}
	want := podresources.ContainerDevices{Namespace: testNamespace, Pod: testPod, Container: testContainer, Resource: testResource, DeviceIDs: []string{uuid}}
	if len(snap.Containers) != 1 || fmt.Sprint(snap.Containers[0]) != fmt.Sprint(want) ||
		fmt.Sprint(snap.Allocatable[testResource]) != fmt.Sprint([]string{uuid}) {
		t.Fatalf("fake kubelet serves %+v, allocatable %v; want %+v", snap.Containers, snap.Allocatable, want)
	}
	return socket
}

// --- the exporter -------------------------------------------------------------

// exporterBinary returns $KUBE_GPU_EXPORTER_BINARY (a prebuilt exporter,
// for machines without Go) or builds the production exporter from this
// checkout: the one the real-GPU test measures.
func exporterBinary(t *testing.T) string { return tooltest.ExporterBinary(t) }

// simBinary returns $KUBE_GPU_EXPORTER_SIM_BINARY or builds
// kube-gpu-exporter-sim, which the dry run points at its simulated node.
func simBinary(t *testing.T) string { return tooltest.SimBinary(t) }

// exporter is a running exporter binary with a client for its endpoint.
type exporter struct {
	*tooltest.Exporter
	client *http.Client
}

func (e *exporter) scrape() (string, error) {
	resp, err := e.client.Get("http://" + e.Addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// startExporter runs the exporter without waiting for any readiness: the
// callers wait for the series they need.
func startExporter(t *testing.T, bin string, args ...string) *exporter {
	t.Helper()
	started := func(string) error { return nil }
	return &exporter{Exporter: tooltest.StartExporter(t, bin, started, args...), client: &http.Client{Timeout: 10 * time.Second}}
}

// waitForContainer waits until the exporter serves the test container's
// duty cycle: NVML is up, the fake kubelet was read and the join matched.
func waitForContainer(t *testing.T, e *exporter, uuid string) {
	t.Helper()
	waitForSeries(t, e, "containerGpuDutyCycle", map[string]string{"namespace": testNamespace, "pod": testPod, "container": testContainer, "gpu_id": uuid})
}

// waitForSeries waits up to 30s for the exporter to serve one series of
// name with these labels, and returns its value.
func waitForSeries(t *testing.T, e *exporter, name string, want map[string]string) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		body, err := e.scrape()
		if err == nil {
			var ss []series
			if ss, err = parseExposition(body); err == nil {
				var v float64
				if v, err = find(ss, name, want); err == nil {
					return v
				}
				nv, _ := find(ss, "kube_gpu_exporter_up", map[string]string{"source": "nvml"})
				kl, _ := find(ss, "kube_gpu_exporter_up", map[string]string{"source": "kubelet"})
				err = fmt.Errorf("%w (kube_gpu_exporter_up nvml=%v kubelet=%v)", err, nv, kl)
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("exporter does not serve %s%v within 30s: %v\nlog:\n%s", name, want, last, e.Log())
	return 0
}

// vmRSS returns a process's resident set size in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// --- the load generator process ---------------------------------------------

// loadProc is a running load generator.
type loadProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (l *loadProc) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

func (l *loadProc) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends the load and waits for it, so the next level starts on an idle
// GPU with the memory released.
func (l *loadProc) stop() {
	if !l.exited() {
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	}
}

// startLoad starts a load generator and waits for its "READY" line: the
// memory is held and the next instant is the first busy period.
func startLoad(t *testing.T, cmd *exec.Cmd, timeout time.Duration) *loadProc {
	t.Helper()
	l := &loadProc{cmd: cmd, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = lockedWriter{&l.mu, &l.out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start load generator %s: %v", strings.Join(cmd.Args, " "), err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			l.mu.Lock()
			l.out.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			if !signalled && strings.TrimSpace(sc.Text()) == "READY" {
				close(ready)
				signalled = true
			}
		}
		_ = cmd.Wait()
		close(l.done)
	}()
	select {
	case <-ready:
	case <-l.done:
		t.Fatalf("load generator %s exited before READY:\n%s", strings.Join(cmd.Args, " "), l.output())
	case <-time.After(timeout):
		l.stop()
		t.Fatalf("load generator %s not READY within %s:\n%s", strings.Join(cmd.Args, " "), timeout, l.output())
	}
	t.Cleanup(l.stop)
	return l
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
