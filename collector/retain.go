package collector

import (
	"slices"
	"time"
)

// prune drops the rows of containers gone for longer than retention, then
// the least recently seen ones past maxRows: the per-container counters
// (Xid, energy, GPU-seconds) outlive their container long enough for the
// last increase to be scraped, and no churn grows them without bound.
func prune[K comparable, R any](rows map[K]*R, lastSeen func(*R) time.Time, now time.Time, retention time.Duration, maxRows int) {
	for k, r := range rows {
		if now.Sub(lastSeen(r)) > retention {
			delete(rows, k)
		}
	}
	if len(rows) <= maxRows {
		return
	}
	type aged struct {
		k  K
		at time.Time
	}
	all := make([]aged, 0, len(rows))
	for k, r := range rows {
		all = append(all, aged{k, lastSeen(r)})
	}
	slices.SortFunc(all, func(a, b aged) int { return a.at.Compare(b.at) })
	for _, a := range all[:len(all)-maxRows] {
		delete(rows, a.k)
	}
}
