package nvml

// window keeps the utilization samples of one device for the duty-cycle
// window. NVML itself keeps only about 16 seconds of samples, so a longer
// window needs our own history. Samples arrive in timestamp order (the
// sampler asks NVML only for samples newer than the last one it saw); old
// ones are dropped from the front as new ones are appended, so memory stays
// bounded by the window, not by uptime.
type window struct {
	ts   []uint64 // microseconds, as NVML stamps samples
	vals []float64
	head int // index of the oldest live sample
}

// add appends a sample and drops those older than cutoff.
func (w *window) add(ts uint64, v float64, cutoff uint64) {
	if n := len(w.ts); n > w.head && ts <= w.ts[n-1] {
		return // not newer than what we have: NVML repeated itself
	}
	w.ts = append(w.ts, ts)
	w.vals = append(w.vals, v)
	w.trim(cutoff)
}

// trim drops samples at or before cutoff, compacting when the dead prefix
// is as long as the live part so appends stay amortised O(1).
func (w *window) trim(cutoff uint64) {
	for w.head < len(w.ts) && w.ts[w.head] <= cutoff {
		w.head++
	}
	if w.head > 0 && w.head >= len(w.ts)-w.head {
		n := copy(w.ts, w.ts[w.head:])
		copy(w.vals, w.vals[w.head:])
		w.ts, w.vals, w.head = w.ts[:n], w.vals[:n], 0
	}
}

// mean returns the mean of the samples newer than cutoff, and false when
// there are none: a device without samples has no duty cycle, not 0.
func (w *window) mean(cutoff uint64) (float64, bool) {
	var sum float64
	var n int
	for i := len(w.ts) - 1; i >= w.head && w.ts[i] > cutoff; i-- {
		sum += w.vals[i]
		n++
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// last returns the newest timestamp, for asking NVML only for newer samples.
func (w *window) last() uint64 {
	if len(w.ts) == w.head {
		return 0
	}
	return w.ts[len(w.ts)-1]
}
