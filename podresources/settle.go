package podresources

import "time"

// DefaultRestartGrace is how long a kubelet that looks like it is
// restarting is not believed. Its socket goes away for the seconds the
// kubelet takes to come back, and then, in 2 of 3 restarts of a real
// kubelet, List answered no pods for about 0.6 s (once with nothing
// allocatable too) until its pod and device managers had restored their
// checkpoints and the device plugins had registered again.
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

// held returns the last believed snapshot in place of a reply taken at
// now, when the kubelet began to look like a restarting one less than the
// grace period ago; else nil, and the suspicion ends. Callers hold c.mu.
func (c *Client) held(now time.Time) *Snapshot {
	if c.cfg.RestartGrace <= 0 || c.believed == nil {
		return nil
	}
	if c.suspectSince.IsZero() {
		c.suspectSince = now
	}
	if now.Sub(c.suspectSince) >= c.cfg.RestartGrace {
		return nil
	}
	h := *c.believed
	h.Taken = now
	h.Dropped, h.DroppedAllocatable = nil, nil
	c.countError("restart_window", 1) // errMu is only ever taken after mu
	return &h
}

// settle returns what to serve for the reply next: within the grace period
// after the first restart-shaped reply or failed call, the last believed
// snapshot (its time set to now, so that the cache treats it as this
// call's), counted as reason restart_window; else next, which becomes the
// believed one. A restart-shaped answer that lasts past the grace period is
// the truth: the pods or devices really went away.
func (c *Client) settle(next *Snapshot) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if restartShaped(c.believed, next) {
		if h := c.held(next.Taken); h != nil {
			return h
		}
	}
	c.suspectSince = time.Time{}
	c.believed = next
	return next
}

// failed is what a failed call returns: the last believed snapshot within
// the grace period (the kubelet's socket is gone while it restarts), err
// after it. The failure itself is counted by its reason either way.
func (c *Client) failed(err error) (*Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.held(c.now()); h != nil {
		return h, nil
	}
	return nil, err
}
