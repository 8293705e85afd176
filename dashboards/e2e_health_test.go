package dashboards_test

import "fmt"

// mayFire reports whether an alert firing on the simulated node is one of
// expectedFiring.
func mayFire(labels map[string]string) bool {
	for _, want := range expectedFiring {
		ok := true
		for k, v := range want {
			if labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func simGPU(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

// healthTable wants n rows: the throttled GPU 3 degraded (1), GPU 4 failed
// (2) after its Xid, each with its holder, and every other row healthy (0).
func healthTable(n int, want map[string]float64) func([]sample) error {
	return func(ss []sample) error {
		seen := 0
		for _, s := range ss {
			key := s.Metric["gpu_id"] + " " + s.Metric["pod"]
			w, ok := want[key]
			if ok {
				seen++
			}
			if s.Values[0] != w {
				return fmt.Errorf("%s: health %g, want %g", key, s.Values[0], w)
			}
		}
		if len(ss) != n || seen != len(want) {
			return fmt.Errorf("%d rows (%d of %d expected ones), want %d", len(ss), seen, len(want), n)
		}
		return nil
	}
}
