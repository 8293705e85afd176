package nvml

import (
	"math"
	"testing"
)

func TestWindowMean(t *testing.T) {
	const sec = uint64(1e6)
	tests := []struct {
		name    string
		samples []float64 // one per second from t=1s
		cutoff  uint64    // mean over samples newer than this
		want    float64
		ok      bool
	}{
		{"empty", nil, 0, 0, false},
		{"all", []float64{10, 20, 30}, 0, 20, true},
		{"window drops old", []float64{100, 100, 0, 0}, 2 * sec, 0, true},
		{"edge excluded", []float64{50, 10}, 1 * sec, 10, true},
		{"nothing newer", []float64{50, 10}, 5 * sec, 0, false},
		{"saturated", []float64{100, 100, 100}, 0, 100, true},
	}
	for _, tt := range tests {
		var w window
		for i, v := range tt.samples {
			w.add(uint64(i+1)*sec, v, 0)
		}
		got, ok := w.mean(tt.cutoff)
		if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: mean = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWindowTrimBoundsMemory(t *testing.T) {
	var w window
	const sec = uint64(1e6)
	// One sample every 100ms for an hour, with a 60s window.
	for i := uint64(1); i <= 36000; i++ {
		ts := i * sec / 10
		var cutoff uint64
		if ts > 60*sec {
			cutoff = ts - 60*sec
		}
		w.add(ts, float64(i%100), cutoff)
	}
	if live := len(w.ts) - w.head; live != 600 {
		t.Fatalf("live samples = %d, want 600", live)
	}
	if cap(w.ts) > 4*600 {
		t.Fatalf("capacity %d grew past the window", cap(w.ts))
	}
}

func TestWindowIgnoresRepeats(t *testing.T) {
	var w window
	w.add(10, 50, 0)
	w.add(10, 90, 0)
	w.add(5, 90, 0)
	if m, _ := w.mean(0); m != 50 {
		t.Fatalf("mean = %v, want 50 (repeated/older samples ignored)", m)
	}
	if w.last() != 10 {
		t.Fatalf("last = %d", w.last())
	}
}
