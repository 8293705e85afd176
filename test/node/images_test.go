package node

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/imagetar"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
)

// The node's images, imported into containerd from a docker archive:
// nothing is pulled.
const (
	pauseImage    = "kge.test/pause:1"
	exporterImage = "kge.test/kube-gpu-exporter:node-e2e"
	// scenarioPath is where the exporter image keeps its simulated GPUs.
	scenarioPath = "/etc/kube-gpu-exporter/node.yaml"
)

// scenario is the simulated node behind the exporter: the GPUs the test
// device plugins advertise, by the same UUIDs, and no pods of its own, so
// that the exporter reads the real kubelet's socket and the real API.
const scenario = `node: kge-node
model: H100-SXM5-80GB
gpus: 12
`

// staticBinary builds pkg without cgo.
func staticBinary(t *testing.T, pkg string) []byte {
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = tooltest.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sharedLibs returns the files the dynamic binary needs to run, as ldd
// resolves them on this machine: the glibc a distroless base carries.
func sharedLibs(t *testing.T, bin string) []imagetar.File {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	var files []imagetar.File
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
		f := strings.Fields(sc.Text())
		var path string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			path = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			path = f[0]
		default:
			continue
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, imagetar.File{Path: path, Mode: 0o755, Data: b})
	}
	if len(files) == 0 {
		t.Fatalf("ldd %s listed no libraries: is it a cgo build?", bin)
	}
	return files
}

// images returns the pause image and the exporter's, laid out like the
// Dockerfile's final stage on its distroless base: the binary in
// /usr/bin, glibc, a nonroot user, /tmp; here the binary is the simulated
// node's.
func images(t *testing.T) []imagetar.Image {
	pause := imagetar.Image{
		Name: pauseImage, Entrypoint: []string{"/pause"},
		Files: []imagetar.File{{Path: "/pause", Mode: 0o755, Data: staticBinary(t, "./test/node/pause")}},
	}
	sim := tooltest.SimBinary(t)
	simData, err := os.ReadFile(sim)
	if err != nil {
		t.Fatal(err)
	}
	files := append(sharedLibs(t, sim),
		imagetar.File{Path: "/usr/bin/kube-gpu-exporter-sim", Mode: 0o755, Data: simData},
		imagetar.File{Path: scenarioPath, Data: []byte(scenario)},
		imagetar.File{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		imagetar.File{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		imagetar.File{Path: "/home/nonroot", Dir: true, Mode: 0o700},
		imagetar.File{Path: "/tmp", Dir: true, Mode: 0o1777},
	)
	exporter := imagetar.Image{
		Name: exporterImage, User: "65532:65532", Files: files,
		Entrypoint: []string{"/usr/bin/kube-gpu-exporter-sim", "--simulate.scenario=" + scenarioPath},
	}
	return []imagetar.Image{pause, exporter}
}

// importImages writes the images and imports them into the CRI's
// namespace of the node's containerd.
func (n *kubeNode) importImages(t *testing.T) {
	archive := filepath.Join(n.dir, "images.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := imagetar.Write(f, images(t)...); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := n.ctr("images", "import", archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := n.ctr("images", "ls", "-q")
	for _, img := range []string{pauseImage, exporterImage} {
		if err != nil || !strings.Contains(out, img) {
			t.Fatalf("%s not imported (%v): %s", img, err, out)
		}
	}
	os.Remove(archive)
}
