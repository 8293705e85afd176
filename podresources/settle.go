package podresources

import "time"

// DefaultRestartGrace is how long a reply shaped like a restarting kubelet's
// is not believed. A real kubelet answered List with no pods for about 0.6 s
// after a restart, once with nothing allocatable too, until its pod and
// device managers had restored their checkpoints and the device plugins had
// registered again; the NVIDIA device plugin re-registers within seconds.
const DefaultRestartGrace = 10 * time.Second

// restartShaped tells whether next looks like a kubelet that has just
// restarted rather than a node whose pods or devices went away: it lists no
// pods at all where prev listed some (the exporter's own pod is listed on a
// real node, so a kubelet that is up never answers none), or no GPU is
// allocatable where some were.
func restartShaped(prev, next *Snapshot) bool {
	if prev == nil {
		return false
	}
	if prev.Pods > 0 && next.Pods == 0 {
		return true
	}
	return allocatableDevices(prev) > 0 && allocatableDevices(next) == 0
}

func allocatableDevices(s *Snapshot) int {
	n := 0
	for _, ids := range s.Allocatable {
		n += len(ids)
	}
	return n
}

// settle returns what to serve for the reply next: within the grace period
// after the first restart-shaped reply, the last believed snapshot (its
// time set to now, so that the cache treats it as this call's), counted as
// reason restart_window; else next, which becomes the believed one. A
// restart-shaped answer that lasts past the grace period is the truth: the
// pods or devices really went away.
func (c *Client) settle(next *Snapshot) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.RestartGrace > 0 && restartShaped(c.believed, next) {
		if c.suspectSince.IsZero() {
			c.suspectSince = next.Taken
		}
		if next.Taken.Sub(c.suspectSince) < c.cfg.RestartGrace {
			held := *c.believed
			held.Taken = next.Taken
			held.Dropped, held.DroppedAllocatable = nil, nil
			c.countErrorLocked("restart_window", 1)
			return &held
		}
	}
	c.suspectSince = time.Time{}
	c.believed = next
	return next
}
