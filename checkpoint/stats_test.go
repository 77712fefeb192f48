package checkpoint

import (
	"errors"
	"testing"
	"time"
)

// TestStatsAndHooks: the counters, Pending and the query and bless hooks
// that the metrics read.
func TestStatsAndHooks(t *testing.T) {
	for _, async := range []bool{false, true} {
		ev := &eventLog{}
		store := newMemStore(memStoreOpts{async: async}, ev)
		var queries, blesses, failures, answered int
		tr, err := NewWithOptions(store.store(), newMemBacking(ev), nil, Options{
			OnQuery: func(d time.Duration, paths int, err error) {
				if err != nil {
					failures++
					return
				}
				queries++
				answered = paths
			},
			OnBless: func(d time.Duration, err error) {
				if err != nil {
					failures++
					return
				}
				blesses++
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		manualCompletions(tr)
		if ps, err := tr.Pending(); err != nil || ps[0].Paths != 0 || !ps[0].Oldest.IsZero() {
			p := ps[0]
			t.Fatalf("async=%v: Pending of a new journal: %+v, %v", async, p, err)
		}
		before := time.Now()
		tok, err := tr.Begin(Intent{Op: OpCreate, Path: "d/a"}, Intent{Op: OpWrite, Path: "d/a"})
		if err != nil {
			t.Fatal(err)
		}
		if n := tr.InFlight(); n != 1 {
			t.Errorf("async=%v: InFlight %d during a modification, want 1", async, n)
		}
		tok.End()
		tok, err = tr.Begin(Intent{Op: OpChmod, Path: "b"}) // ended after Pending
		if err != nil {
			t.Fatal(err)
		}
		ps, err := tr.Pending()
		if err != nil {
			t.Fatal(err)
		}
		p := ps[0]
		st, _, err := tr.Status()
		if err != nil {
			t.Fatal(err)
		}
		if p.Paths != 2 || st.PendingPaths != p.Paths {
			t.Errorf("async=%v: Pending %+v, status pending %d, want 2 paths", async, p, st.PendingPaths)
		}
		if p.Oldest.Before(before.Add(-time.Second)) || p.Oldest.After(time.Now()) {
			t.Errorf("async=%v: oldest record at %v, want about %v", async, p.Oldest, before)
		}
		r := tr.Records()
		if r.Synced == 0 || (r.Queued == 0) == async {
			t.Errorf("async=%v: records %+v", async, r)
		}
		tok.End()
		if n := tr.InFlight(); n != 0 {
			t.Errorf("async=%v: InFlight %d at rest", async, n)
		}

		if _, err := tr.Bless(0); !errors.Is(err, ErrUnknownQuery) {
			t.Errorf("async=%v: bless before any query: %v", async, err)
		}
		a, err := tr.Query()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Bless(a.Query); err != nil {
			t.Fatal(err)
		}
		if queries != 1 || blesses != 1 || failures != 1 || answered != len(a.Entries) || answered == 0 {
			t.Errorf("async=%v: hooks saw %d queries (last %d paths, answer has %d), %d blesses, %d failures; want 1, 1, 1",
				async, queries, answered, len(a.Entries), blesses, failures)
		}
		if ps, err := tr.Pending(); err != nil || ps[0].Paths != 0 {
			t.Errorf("async=%v: Pending after the bless: %+v, %v", async, ps, err)
		}
		// The same modification in the new period needs a new record.
		if tok, err = tr.Begin(Intent{Op: OpChmod, Path: "b"}); err != nil {
			t.Fatal(err)
		}
		tok.End()
		if r2 := tr.Records(); r2.Synced+r2.Queued <= r.Synced+r.Queued {
			t.Errorf("async=%v: the new period's record was not counted: %+v then %+v", async, r, r2)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
