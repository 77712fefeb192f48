package hsm

import (
	"sort"
	"sync"
	"time"
)

// OpRead is a read of a released file's content from its tier for one of
// hsmfs's own consumers (ReadCopy), counted in the stats beside the
// transitions.
const OpRead Op = "read"

// TransitionStats count the transitions of one kind on one tier, for the
// metrics.
type TransitionStats struct {
	Op      Op
	Tier    uint32
	Failed  bool
	Count   uint64
	Seconds float64 // their total duration
	Bytes   int64   // the content moved to or from the tier
}

type statKey struct {
	op     Op
	tier   uint32
	failed bool
}

// stats are the counts behind Transitions; mu guards m.
type stats struct {
	mu sync.Mutex
	m  map[statKey]*TransitionStats
}

// record counts one transition that began at start.
func (m *Manager) record(op Op, tier uint32, err error, start time.Time, bytes int64) {
	k := statKey{op, tier, err != nil}
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	if m.stats.m == nil {
		m.stats.m = map[statKey]*TransitionStats{}
	}
	s := m.stats.m[k]
	if s == nil {
		s = &TransitionStats{Op: op, Tier: tier, Failed: err != nil}
		m.stats.m[k] = s
	}
	s.Count++
	s.Seconds += time.Since(start).Seconds()
	s.Bytes += bytes
}

// Transitions returns the counts of the transitions since the mount.
func (m *Manager) Transitions() []TransitionStats {
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	out := make([]TransitionStats, 0, len(m.stats.m))
	for _, s := range m.stats.m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Op != b.Op {
			return a.Op < b.Op
		}
		if a.Tier != b.Tier {
			return a.Tier < b.Tier
		}
		return !a.Failed && b.Failed
	})
	return out
}
