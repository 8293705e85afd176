package main

import (
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/tooltest"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

var screenshot = flag.String("status-page.screenshot", "", "also write the status page's screenshot to this file, relative to the repository root (make screenshot: docs/img/status-page.png)")

func getPage(addr string) (int, string, error) {
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestStatusPageInChromium serves the built-in simulated node and renders
// its page at / in headless Chromium: the DOM Chromium built has a row per
// GPU with its holders and a line per source, and the screenshot shows the
// table (not blank, the window's size, the healthy and degraded colours of
// the health column).
func TestStatusPageInChromium(t *testing.T) {
	tooltest.Require(t, "chromium")
	t.Parallel()
	e := startExporter(t, "--simulate")
	if *screenshot != "" {
		// The README's picture shows the inference server's GPU failed
		// by its Xid 79, which the built-in node reports 20 s after start.
		deadline := time.Now().Add(40 * time.Second)
		for {
			_, body, err := getPage(e.Addr)
			if err == nil && strings.Contains(body, "79 ×1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no Xid 79 on the page within 40 s: %v", err)
			}
			time.Sleep(time.Second)
		}
	}
	url := "http://" + e.Addr + "/"

	dom := string(tooltest.Chromium(t, url, "--dump-dom"))
	for i := range 8 {
		uuid := simulate.UUID(i)
		if !strings.Contains(dom, fmt.Sprintf(`<tr class="gpu" data-uuid="%s">`, uuid)) {
			t.Errorf("no table row for %s in the rendered DOM", uuid)
		}
	}
	for _, want := range []string{
		`<table id="gpus">`, "ml-training/trainer-0/trainer", "batch/shared-a/worker", "batch/shared-b/worker",
		"thermal_slowdown", "<td>nvml</td>", "<td>kubelet</td>", "<td>kubernetes</td>", `href="/metrics"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("rendered DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "page.png")
	tooltest.Chromium(t, url, "--screenshot="+shot, "--window-size=1400,900")
	raw, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 900 {
		t.Fatalf("screenshot is %dx%d, want 1400x900", b.Dx(), b.Dy())
	}
	inked, healthy, degraded := colours(img)
	if inked < 0.02 {
		t.Errorf("screenshot nearly blank: %.1f %% of pixels not white", 100*inked)
	}
	if healthy < 50 || degraded < 20 {
		t.Errorf("screenshot lacks the health column's colours: %d healthy-green, %d degraded-amber pixels", healthy, degraded)
	}
	if *screenshot != "" {
		if err := os.WriteFile(filepath.Join(tooltest.RepoRoot(), *screenshot), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", *screenshot)
	}
}

// colours returns the share of pixels that are not white, and how many
// have the page's healthy green (#1a7f37) and degraded amber (#9a6700).
func colours(img image.Image) (inked float64, healthy, degraded int) {
	near := func(c color.Color, r, g, b int) bool {
		cr, cg, cb, _ := c.RGBA()
		d := func(x uint32, y int) int { return max(int(x>>8)-y, y-int(x>>8)) }
		return d(cr, r) < 12 && d(cg, g) < 12 && d(cb, b) < 12
	}
	b := img.Bounds()
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := img.At(x, y)
			if !near(c, 255, 255, 255) {
				n++
			}
			if near(c, 0x1a, 0x7f, 0x37) {
				healthy++
			}
			if near(c, 0x9a, 0x67, 0x00) {
				degraded++
			}
		}
	}
	return float64(n) / float64(b.Dx()*b.Dy()), healthy, degraded
}

// TestStatusPageEscapesHostileNames: the kubelet's socket passes on pod
// names no API server would admit; the page at / shows them as text, and
// tells the browser to run no script whatever it holds.
func TestStatusPageEscapesHostileNames(t *testing.T) {
	t.Parallel()
	const pod = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	k := newTestKubelet(2, 1)
	k.ListReply.PodResources[0].Name = pod
	k.ListReply.PodResources[0].Namespace = `team'<b>`
	sock := serveKubelet(t, k)
	e := launch(t, plainReady, "--simulate.scenario="+gpuOnlyScenario(t, 2), "--kubelet.pod-resources-socket="+sock, "--no-kube.enabled")
	resp, err := http.Get("http://" + e.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status page: %d %v", resp.StatusCode, err)
	}
	body := string(b)
	for _, raw := range []string{"<script", "<img", "<b>"} {
		if strings.Contains(body, raw) {
			t.Errorf("status page holds %q unescaped", raw)
		}
	}
	if want := "team&#39;&lt;b&gt;/&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;/main"; !strings.Contains(body, want) {
		t.Errorf("the hostile holder is not shown as text %q:\n%s", want, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}
