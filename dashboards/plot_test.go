package dashboards_test

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"sort"
	"testing"
)

// The end-to-end test can write a plot of what Prometheus returned for the
// node dashboard's "Duty cycle per GPU" panel (DASHBOARDS_PLOT=file.png), so
// that the documentation shows real data and not a mock-up. Standard library
// only, hence no text: the documentation carries the legend.

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

// plotSeries draws series (values 0-100, one per step) as lines on a dark
// panel with dashed horizontal lines at the thresholds, series sorted by
// the label key so that colours are stable.
func plotSeries(path string, ss []sample, key string, thresholds []float64) error {
	const w, h, pad = 960, 360, 20
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	bg := color.RGBA{0x18, 0x1b, 0x1f, 0xff}
	grid := color.RGBA{0x33, 0x37, 0x3d, 0xff}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, bg)
		}
	}
	px := func(i, n int) int {
		if n < 2 {
			return pad
		}
		return pad + i*(w-2*pad)/(n-1)
	}
	py := func(v float64) int { return h - pad - int(v/100*float64(h-2*pad)) }
	for _, v := range []float64{0, 25, 50, 75, 100} {
		for x := pad; x < w-pad; x++ {
			img.SetRGBA(x, py(v), grid)
		}
	}
	for _, th := range thresholds {
		for x := pad; x < w-pad; x++ {
			if (x/6)%2 == 0 {
				img.SetRGBA(x, py(th), color.RGBA{0xf2, 0x49, 0x5c, 0xff})
			}
		}
	}
	sorted := append([]sample(nil), ss...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Metric[key] < sorted[j].Metric[key] })
	for i, s := range sorted {
		c := palette[i%len(palette)]
		for j := 1; j < len(s.Values); j++ {
			line(img, px(j-1, len(s.Values)), py(s.Values[j-1]), px(j, len(s.Values)), py(s.Values[j]), c)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
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

func TestPlotSeries(t *testing.T) {
	path := t.TempDir() + "/p.png"
	ss := []sample{
		{Metric: map[string]string{"gpu_id": "b"}, Values: []float64{0, 50, 100}},
		{Metric: map[string]string{"gpu_id": "a"}, Values: []float64{100, 50, 0}},
	}
	if err := plotSeries(path, ss, "gpu_id", []float64{5, 95}); err != nil {
		t.Fatal(err)
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
	// Series "a" (first colour) starts top left at 100 %.
	if got := color.RGBAModel.Convert(img.At(20, 20)).(color.RGBA); got != palette[0] {
		t.Errorf("pixel at (20,20) = %v, want the first series' colour %v", got, palette[0])
	}
}
