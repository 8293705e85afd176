package dashboards_test

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The end-to-end test can write a plot of what Prometheus returned for the
// node dashboard's "Duty cycle per GPU" panel (DASHBOARDS_PLOT=file.png), so
// that the documentation shows real data and not a mock-up. It is drawn with
// the standard library and the bitmap font of font_test.go, and carries its
// own title, axes and legend so that it reads without the surrounding text.

var palette = []color.RGBA{
	{0x73, 0xbf, 0x69, 0xff}, // green
	{0xf2, 0xcc, 0x0c, 0xff}, // yellow
	{0x57, 0x94, 0xf2, 0xff}, // blue
	{0xff, 0x78, 0x0a, 0xff}, // orange
	{0xb8, 0x77, 0xd9, 0xff}, // purple
	{0xf2, 0x49, 0x5c, 0xff}, // red
	{0x8a, 0xb8, 0xff, 0xff}, // light blue
	{0xca, 0x95, 0x6a, 0xff}, // brown
}

var (
	plotBG    = color.RGBA{0x18, 0x1b, 0x1f, 0xff}
	plotGrid  = color.RGBA{0x33, 0x37, 0x3d, 0xff}
	plotAxis  = color.RGBA{0x8e, 0x8e, 0x8e, 0xff}
	plotText  = color.RGBA{0xd8, 0xd9, 0xda, 0xff}
	plotTitle = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

// plot is a line chart of percentages (0-100) over time.
type plot struct {
	Title       string
	YLabel      string // above the y axis
	LegendTitle string // above the legend entries
	Lines       []plotLine
	Thresholds  []plotThreshold
}

// plotLine is one series: its legend entry and its points, T in seconds
// from the start of the plot.
type plotLine struct {
	Name string
	T, V []float64
}

// plotThreshold is a dashed horizontal line with a label right of the plot
// area (two lines at most, split at a newline, 9 characters wide).
type plotThreshold struct {
	Value float64
	Name  string
	Color color.RGBA
}

// Layout in pixels: text at scale 2 is 10×14 pixels a capital letter.
const (
	plotW, plotAreaH     = 1200, 380
	plotLeft, plotRight  = 90, 130
	plotTop              = 84
	textScale, lineSpace = 2, 24
)

// xTicks picks a tick interval in seconds giving at most 10 ticks over span,
// and the unit its labels are written in (minutes from 5 minutes on).
func xTicks(span float64) (step float64, unit string, div float64) {
	step = 3600
	for _, s := range []float64{5, 10, 15, 30, 60, 120, 300, 600, 900, 1800} {
		if span/s <= 10 {
			step = s
			break
		}
	}
	if span >= 300 {
		return step, "min", 60
	}
	return step, "s", 1
}

// draw renders p as a PNG image.
func (p plot) draw() *image.RGBA {
	legendTop := plotTop + plotAreaH + 3*lineSpace + 8
	h := legendTop + len(p.Lines)*lineSpace + 12
	if p.LegendTitle != "" {
		h += lineSpace
	}
	img := image.NewRGBA(image.Rect(0, 0, plotW, h))
	fillRect(img, 0, 0, plotW, h, plotBG)
	if p.LegendTitle != "" {
		drawText(img, 12, legendTop, p.LegendTitle, textScale, plotText)
		legendTop += lineSpace
	}
	x0, x1 := plotLeft, plotW-plotRight
	y0, y1 := plotTop, plotTop+plotAreaH // top and bottom of the plot area
	span := 1.0
	for _, l := range p.Lines {
		for _, t := range l.T {
			span = max(span, t)
		}
	}
	px := func(t float64) int { return x0 + int(t/span*float64(x1-x0)+0.5) }
	py := func(v float64) int { return y1 - int(v/100*float64(y1-y0)+0.5) }

	drawText(img, 12, 16, p.Title, textScale, plotTitle)
	drawText(img, 12, plotTop-34, p.YLabel, textScale, plotText)

	// y axis: grid and labels every 25 %.
	for v := 0.0; v <= 100; v += 25 {
		fillRect(img, x0, py(v), x1-x0, 1, plotGrid)
		label := strconv.Itoa(int(v)) + " %"
		drawText(img, x0-10-textWidth(label, textScale), py(v)-7, label, textScale, plotText)
	}
	// x axis: grid and labels at whole intervals.
	step, unit, div := xTicks(span)
	for t := 0.0; t <= span+0.001; t += step {
		fillRect(img, px(t), y0, 1, y1-y0, plotGrid)
		fillRect(img, px(t), y1, 1, 6, plotAxis)
		label := strconv.FormatFloat(t/div, 'f', -1, 64)
		drawText(img, px(t)-textWidth(label, textScale)/2, y1+10, label, textScale, plotText)
	}
	fillRect(img, x0, y0, 1, y1-y0+1, plotAxis)
	fillRect(img, x0, y1, x1-x0+1, 1, plotAxis)
	xl := fmt.Sprintf("time since the exporter started (%s)", unit)
	drawText(img, x0+(x1-x0-textWidth(xl, textScale))/2, y1+10+lineSpace+4, xl, textScale, plotText)

	for _, th := range p.Thresholds {
		for x := x0 + 1; x < x1; x++ {
			if (x/6)%2 == 0 {
				img.SetRGBA(x, py(th.Value), th.Color)
			}
		}
		// The label goes right of the plot area, where no series crosses it.
		for k, l := range strings.Split(th.Name, "\n") {
			drawText(img, x1+10, py(th.Value)-17+k*20, l, textScale, th.Color)
		}
	}
	for i, l := range p.Lines {
		c := palette[i%len(palette)]
		for j := 1; j < len(l.V); j++ {
			line(img, px(l.T[j-1]), py(l.V[j-1]), px(l.T[j]), py(l.V[j]), c)
		}
		// Legend: one entry a line, a stroke of the series' colour first.
		y := legendTop + i*lineSpace
		fillRect(img, x0, y+6, 28, 3, c)
		drawText(img, x0+40, y, l.Name, textScale, plotText)
	}
	return img
}

func (p plot) write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, p.draw()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// line draws a two-pixel-thick segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if 2*e >= dy {
			e += dy
			x0 += sx
		}
		if 2*e <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// shortGPU shortens a simulated GPU UUID to its distinctive tail
// (GPU-00000000-0000-4000-8000-000000000003 becomes GPU-...000003).
func shortGPU(id string) string {
	if len(id) > 16 {
		return id[:4] + "..." + id[len(id)-6:]
	}
	return id
}

// plotDutyCycle writes what the node dashboard's "Duty cycle per GPU" panel
// shows for sim-node since the exporter started, after letting it run for
// DASHBOARDS_PLOT_SECONDS (default 60) in all. The legend names who uses
// each GPU, from the exporter's per-container and unattributed series.
func plotDutyCycle(t *testing.T, prom *promAPI, out string, began time.Time) {
	t.Helper()
	span := 60 * time.Second
	if v := os.Getenv("DASHBOARDS_PLOT_SECONDS"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("DASHBOARDS_PLOT_SECONDS: %v", err)
		}
		span = time.Duration(secs) * time.Second
	}
	time.Sleep(time.Until(began.Add(span)))
	var expr string
	for _, path := range dashboardFiles(t) {
		d, _ := loadDashboard(t, path)
		for _, p := range allPanels(d.Panels) {
			if d.UID == "kube-gpu-exporter-node" && p.Title == "Duty cycle per GPU" {
				expr = p.Targets[0].Expr
			}
		}
	}
	vals := map[string]string{"cluster": ".*", "node": "sim-node"}
	for k, v := range builtins {
		vals[k] = v
	}
	expr, err := substitute(expr, vals)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := prom.queryRange(expr, time.Since(began), time.Second)
	if err := nonEmpty(ss, err); err != nil {
		t.Fatalf("plot query %s: %v", expr, err)
	}
	users := map[string][]string{}
	for _, q := range []struct{ expr, format string }{
		{`group by (gpu_id, namespace, pod, container) (containerGpuDutyCycle{node="sim-node"})`, "%s/%s/%s"},
		{`group by (gpu_id, namespace, pod) (kube_gpu_unattributed_duty_cycle{node="sim-node"})`, "%s/%s (uses it unallocated)%.0s"},
	} {
		us, err := prom.query(q.expr)
		if err != nil {
			t.Fatalf("plot legend query %s: %v", q.expr, err)
		}
		for _, u := range us {
			id := u.Metric["gpu_id"]
			users[id] = append(users[id], fmt.Sprintf(q.format, u.Metric["namespace"], u.Metric["pod"], u.Metric["container"]))
		}
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].Metric["gpu_id"] < ss[j].Metric["gpu_id"] })
	p := plot{
		Title:       fmt.Sprintf(`Duty cycle per GPU, node "sim-node" of kube-gpu-exporter --simulate, %d s`, int(span.Seconds())),
		YLabel:      "duty cycle (%)",
		LegendTitle: fmt.Sprintf("GPU (%s) and who uses it:", ss[0].Metric["gpu_model"]),
		Thresholds: []plotThreshold{
			{Value: 95, Name: "95 %\nsaturated", Color: color.RGBA{0xf2, 0x49, 0x5c, 0xff}},
			{Value: 5, Name: "5 % idle\nif held", Color: color.RGBA{0xff, 0x98, 0x30, 0xff}},
		},
	}
	for _, s := range ss {
		id := s.Metric["gpu_id"]
		who := "nobody"
		if u := users[id]; len(u) > 0 {
			sort.Strings(u)
			who = strings.Join(u, " + ")
		}
		l := plotLine{Name: fmt.Sprintf("%s  %s", shortGPU(id), who), V: s.Values}
		// A line with the same values as one drawn after it is hidden under
		// the last of them.
		under := ""
		for _, later := range ss[len(p.Lines)+1:] {
			if slices.Equal(later.Values, s.Values) {
				under = later.Metric["gpu_id"]
			}
		}
		if under != "" {
			l.Name += fmt.Sprintf(" (under %s: same values)", shortGPU(under))
		}
		for _, at := range s.Times {
			l.T = append(l.T, at-float64(began.Unix()))
		}
		p.Lines = append(p.Lines, l)
		lo, hi, sum := s.Values[0], s.Values[0], 0.0
		for _, v := range s.Values {
			lo, hi, sum = min(lo, v), max(hi, v), sum+v
		}
		t.Logf("plotted %s: %d points, min %.1f mean %.1f max %.1f", l.Name, len(s.Values), lo, sum/float64(len(s.Values)), hi)
	}
	if err := p.write(out); err != nil {
		t.Fatal(err)
	}
}

func TestPlot(t *testing.T) {
	path := t.TempDir() + "/p.png"
	p := plot{
		Title:  "Two series",
		YLabel: "duty cycle (%)",
		Lines: []plotLine{
			{Name: "a", T: []float64{0, 30, 60}, V: []float64{100, 50, 0}},
			{Name: "b", T: []float64{0, 30, 60}, V: []float64{0, 50, 100}},
		},
		Thresholds: []plotThreshold{{Value: 5, Name: "5 %", Color: palette[5]}},
	}
	if err := p.write(path); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("PLOT_TEST_OUT"); out != "" {
		if err := p.write(out); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	at := func(x, y int) color.RGBA { return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) }
	// Series "a" (first colour) starts top left at 100 %.
	if got := at(plotLeft, plotTop); got != palette[0] {
		t.Errorf("pixel at the top left of the plot area = %v, want the first series' colour %v", got, palette[0])
	}
	// Its legend stroke is drawn in the same colour, under the axis labels.
	legendTop := plotTop + plotAreaH + 3*lineSpace + 8
	if got := at(plotLeft+10, legendTop+7); got != palette[0] {
		t.Errorf("legend stroke = %v, want %v", got, palette[0])
	}
	// The title is drawn (some pixel of its row is text-coloured).
	found := false
	for x := 12; x < 12+textWidth(p.Title, textScale) && !found; x++ {
		for y := 16; y < 16+glyphH*textScale; y++ {
			if at(x, y) == plotTitle {
				found = true
				break
			}
		}
	}
	if !found {
		t.Error("no title pixels")
	}
}

func TestGlyphsCoverLabels(t *testing.T) {
	// Every character the plots write must have a glyph, or it would be
	// left blank.
	for _, s := range []string{
		"Duty cycle per GPU, node \"sim-node\" (kube-gpu-exporter --simulate), 90 s",
		"time since the exporter started (min)", "95 %\nsaturated", "5 % idle\nif held",
		"GPU-...000003 A100-SXM4-40GB  ml-training/trainer-0/trainer + batch/shared-b/worker",
		"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
	} {
		for _, r := range s {
			if _, ok := glyphs[r]; !ok && r != ' ' && r != '\n' {
				t.Errorf("no glyph for %q (in %q)", r, s)
			}
		}
	}
}
