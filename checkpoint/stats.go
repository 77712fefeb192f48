package checkpoint

import (
	"fmt"
	"hash/maphash"
	"slices"
	"time"
)

// What the tracker tells about itself: .hsm/status (Status) and the
// metrics (the methods below, which cmd/hsmfs hands to internal/metrics).
// Everything here but Pending and Status is an atomic load or a short
// leaf lock: cheap enough for any scrape interval. Counting costs the hot
// path nothing beyond one atomic add per journal write (append and
// queueFine), never per modification.

// RecordCounts counts the records the tracker has appended since New.
type RecordCounts struct {
	// Synced: records made durable before the modification they cover
	// went on (intents, rosters, censuses, re-recorded open files, derived
	// paths of answers).
	Synced uint64
	// Queued: fine records queued unsynced, covered by a durable
	// directory intent (coarse mode; 0 with FineOnly).
	Queued uint64
}

// Records returns the record counters.
func (t *Tracker) Records() RecordCounts {
	return RecordCounts{Synced: t.syncedRecs.Load(), Queued: t.queuedRecs.Load()}
}

// OldNameFallbacks counts the queries whose old names could not be
// found by inode (records of an older hsmfs, or fine records that a
// crash may have lost) and took the path rule (renames.go).
func (t *Tracker) OldNameFallbacks() uint64 { return t.oldNameFallbacks.Load() }

// OldNamesCapped counts the queries whose listing of what a copy may hold
// beneath names that are not directories now passed its budget (reused
// inode numbers), and listed each directory beneath one name only from
// there (docs/design.md, "What a copy may hold beneath a name").
func (t *Tracker) OldNamesCapped() uint64 { return t.oldNamesCapped.Load() }

// WholeAnswers counts this run's answers that said full, rather than
// list more paths than the bound allows (query.go, "Whole answers"). It
// stays 0 in runs without crashes, and in every storm the tests run.
func (t *Tracker) WholeAnswers() uint64 { return t.wholeAnswers.Load() }

// InFlight returns the number of modifications between Begin and End
// (files open for writing are not among them: see OpenForWrite).
func (t *Tracker) InFlight() int64 { return t.ps.inFlight() }

// OpenForWrite returns the number of files open for writing.
func (t *Tracker) OpenForWrite() int {
	t.handlesMu.Lock()
	defer t.handlesMu.Unlock()
	return len(t.handles)
}

// Pending is what the next answer will be built from, as counted from the
// journal.
type Pending struct {
	// Paths: distinct names of the records of unblessed periods
	// (directory intents, rosters and censuses, which name no changed path of
	// their own, are left out, and renamed directories are not
	// expanded, so the answer may be longer).
	Paths int
	// Oldest is the time of the oldest record of an unblessed period
	// (zero if there is none): how long the oldest change not yet
	// blessed has waited. A file open for writing is recorded again by
	// every query, so its change counts from the latest query.
	Oldest time.Time
	// Consumer names it: DefaultConsumer, or a named consumer's name.
	Consumer string
}

// Pending scans the journal from the last bless of each consumer and
// gives each consumer's pending paths, the default's first, then the
// named ones by name. It costs a read of every record still kept: on the
// 2-core development machine, about 0.7 s and 240 MiB of short-lived
// allocations (mostly the journal's decoding) per million records. Paths
// are told apart by a 64-bit hash, so that a set holds 8 bytes per path
// rather than the path (1.0 s and 275 MiB with the paths); two paths with
// one hash count once, a chance of about 1 in 37 million at a million
// paths. It takes no lock that modifications take, so it does not stall
// them, but the journal's scan first writes the queued fine records (one
// unsynced write).
func (t *Tracker) Pending() ([]Pending, error) {
	st := t.stateNow()
	from := []uint64{st.LastBlessed}
	out := []Pending{{Consumer: DefaultConsumer}}
	for _, c := range st.Consumers {
		from = append(from, c.LastBlessed)
		out = append(out, Pending{Consumer: c.Name})
	}
	// One set for every consumer: each path's hash with the latest
	// period that names it. A consumer counts the paths named at or
	// after its cursor. (A set per consumer held the same ten million
	// hashes nine times over with eight named consumers: 5 GiB.)
	seed := maphash.MakeSeed()
	latest := make(map[uint64]uint64)
	note := func(h, period uint64) {
		if p, ok := latest[h]; !ok || period > p {
			latest[h] = period
		}
	}
	lowest := slices.Min(from)
	err := t.store.Scan(st.keepFrom(), func(r *Record, _ bool) error {
		if r.Period < lowest {
			return nil
		}
		for i := range out {
			if r.Period >= from[i] && (out[i].Oldest.IsZero() || r.Time.Before(out[i].Oldest)) {
				out[i].Oldest = r.Time
			}
		}
		if r.Op == OpEntries || r.Op == OpRoster {
			return nil
		}
		if r.Path != "" {
			note(maphash.String(seed, r.Path), r.Period)
		}
		if r.Path2 != "" && r.Flags&FlagCarried == 0 { // a carried record is never listed itself
			note(maphash.String(seed, r.Path2), r.Period)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan journal: %w", err)
	}
	for _, p := range latest {
		for i := range out {
			if p >= from[i] {
				out[i].Paths++
			}
		}
	}
	return out, nil
}

// Status is what .hsm/status reports from the tracker.
type Status struct {
	Current      uint64
	LastQuery    uint64
	LastBlessed  uint64
	PendingPaths int
	InFlight     int64
	OpenForWrite int
	Recovered    bool
	JournalSyncs uint64
	Run          uint64
}

// Status reports the state and every consumer (Consumers), from one
// scan of the journal for their pending paths (see Pending, whose cost it
// has).
func (t *Tracker) Status() (Status, []ConsumerStatus, error) {
	ps, err := t.Pending()
	if err != nil {
		return Status{}, nil, fmt.Errorf("status: %w", err)
	}
	return t.status(ps), t.consumers(ps), nil
}

func (t *Tracker) status(ps []Pending) Status {
	st := t.stateNow()
	return Status{Current: t.ps.cur.Load(), LastQuery: st.LastQuery, LastBlessed: st.LastBlessed,
		PendingPaths: ps[0].Paths, InFlight: t.ps.inFlight(), OpenForWrite: t.OpenForWrite(),
		Recovered: st.RecoveredAt != 0, JournalSyncs: t.store.Syncs(), Run: t.run}
}
