package checkpoint

import (
	"slices"
	"testing"
	"time"
)

// The fixture of the tracker's unit tests, on the fakes of
// memstore_test.go and membacking_test.go, and its helpers.

type fixture struct {
	t      *testing.T
	ev     *eventLog
	store  *memStore
	back   *memBacking
	tr     *Tracker
	closed bool
	// listing: the tracker sees the optional Backing methods
	// (listingBacking), rosters ahead included.
	listing bool
}

func newFixture(t *testing.T, opts memStoreOpts) *fixture {
	t.Helper()
	return newFixtureWith(t, opts, false)
}

func newFixtureWith(t *testing.T, opts memStoreOpts, listing bool) *fixture {
	t.Helper()
	f := &fixture{t: t, ev: &eventLog{}, listing: listing}
	f.store = newMemStore(opts, f.ev)
	f.back = newMemBacking(f.ev)
	f.mount()
	t.Cleanup(func() {
		for _, p := range f.store.problems() {
			t.Errorf("store rule broken: %s", p)
		}
	})
	return f
}

func (f *fixture) mount() {
	f.t.Helper()
	var back Backing = f.back
	if f.listing {
		back = listingBacking{f.back}
	}
	tr, err := New(f.store.store(), back, nil)
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	manualCompletions(tr)
	f.tr = tr
}

// complete records the pending completions now (the completer's delay
// elapsed).
func (f *fixture) complete() { f.tr.comp.flush() }

// crash simulates a kill or a power cut and mounts again.
func (f *fixture) crash(powerCut bool) {
	f.t.Helper()
	old := f.store
	f.store = old.crash(powerCut)
	f.back = f.back.crash(powerCut, func(int, bop) bool { return true })
	for _, p := range old.problems() {
		f.t.Errorf("store rule broken before the crash: %s", p)
	}
	f.mount()
}

func (f *fixture) begin(ins ...Intent) Token {
	f.t.Helper()
	tok, err := f.tr.Begin(ins...)
	if err != nil {
		f.t.Fatalf("Begin(%v): %v", ins, err)
	}
	return tok
}

// mod records one completed modification (without touching BACKING).
func (f *fixture) mod(op Op, path string) {
	f.t.Helper()
	f.begin(Intent{Op: op, Path: path}).End()
}

func (f *fixture) query() *Answer {
	f.t.Helper()
	a, err := f.tr.Query()
	if err != nil {
		f.t.Fatalf("Query: %v", err)
	}
	return a
}

func (f *fixture) bless(id uint64) uint64 {
	f.t.Helper()
	got, err := f.tr.Bless(id)
	if err != nil {
		f.t.Fatalf("Bless(%d): %v", id, err)
	}
	return got
}

func (f *fixture) appends() int {
	n, _ := f.store.counts()
	return n
}

func (f *fixture) status() Status {
	f.t.Helper()
	st, _, err := f.tr.Status()
	if err != nil {
		f.t.Fatalf("Status: %v", err)
	}
	return st
}

func paths(a *Answer) []string {
	var ps []string
	for _, e := range a.Entries {
		ps = append(ps, e.Path)
	}
	return ps
}

func entryOf(a *Answer, path string) *Entry {
	for i := range a.Entries {
		if a.Entries[i].Path == path {
			return &a.Entries[i]
		}
	}
	return nil
}

func wantPaths(t *testing.T, a *Answer, want ...string) {
	t.Helper()
	got := paths(a)
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("query %d lists %q, want %q", a.Query, got, want)
	}
}

// waitCurrent waits until a query or checkpoint has started period p.
func (f *fixture) waitCurrent(p uint64) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.tr.Current() != p {
		if time.Now().After(deadline) {
			f.t.Fatalf("period %d did not start within 10s (current %d)", p, f.tr.Current())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func staticPath(p string) PathFunc { return func() (string, bool) { return p, true } }

// waitDone reports whether ch is closed within d.
func waitDone(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// ---------------------------------------------------------------------
// dedup and Begin

func (f *failNth) hook() error {
	f.calls++
	if f.calls == f.n {
		return f.err
	}
	return nil
}
