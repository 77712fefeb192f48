package checkpointtest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Opener makes the stores that the suite tests.
type Opener struct {
	// Open returns a new, empty store, closed by the test's cleanup.
	Open func(t *testing.T) checkpoint.Store
	// Reopen ends s as the end of its process does (after it, s is not
	// used again) and returns the store that the next mount opens over
	// the same data.
	Reopen func(t *testing.T, s checkpoint.Store) checkpoint.Store
}

// RunStoreTests runs the Store contract against the stores of o.
func RunStoreTests(t *testing.T, o Opener) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Empty", testEmpty},
		{"AppendAssignsSeq", testAppendAssignsSeq},
		{"EveryFieldRoundTrips", testEveryFieldRoundTrips},
		{"ScanOrderAndFrom", testScanOrderAndFrom},
		{"ScanStopsOnError", testScanStopsOnError},
		{"ScanMayCallTheStore", testScanMayCallTheStore},
		{"CompleteAndReopen", testCompleteAndReopen},
		{"StateRoundTrips", testStateRoundTrips},
		{"DropBefore", testDropBefore},
		{"ConcurrentAppends", testConcurrentAppends},
		{"AppendAsync", testAppendAsync},
		{"LastSeq", testLastSeq},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, o) })
	}
}

// Scanned is one record as Scan gave it.
type Scanned struct {
	R         checkpoint.Record
	Completed bool
}

// ScanAll is every record with Period >= from, in Scan's order.
func ScanAll(t *testing.T, s checkpoint.Store, from uint64) []Scanned {
	t.Helper()
	var out []Scanned
	if err := s.Scan(from, func(r *checkpoint.Record, completed bool) error {
		out = append(out, Scanned{*r, completed})
		return nil
	}); err != nil {
		t.Fatalf("Scan(%d): %v", from, err)
	}
	return out
}

// begin makes period p current in s's durable state, as the tracker does
// before it writes a record of p.
func begin(t *testing.T, s checkpoint.Store, p uint64) {
	t.Helper()
	st, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if st.Current < p {
		st.Current = p
		if err := s.SaveState(st); err != nil {
			t.Fatalf("SaveState: %v", err)
		}
	}
}

func appendT(t *testing.T, s checkpoint.Store, recs ...*checkpoint.Record) {
	t.Helper()
	if err := s.Append(recs); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func write(period uint64, path string) *checkpoint.Record {
	return &checkpoint.Record{Period: period, Run: 1, Op: checkpoint.OpWrite, Ino: 7,
		Time: time.Unix(1_700_000_000, 5), Path: path}
}

func testEmpty(t *testing.T, o Opener) {
	s := o.Open(t)
	st, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if !reflect.DeepEqual(st, checkpoint.State{}) {
		t.Errorf("a new store's state is %+v, not the zero State", st)
	}
	if got := ScanAll(t, s, 0); len(got) != 0 {
		t.Errorf("a new store scans %d records", len(got))
	}
}

func testAppendAssignsSeq(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 2)
	var all []*checkpoint.Record
	for i := range 5 {
		batch := []*checkpoint.Record{write(1+uint64(i%2), fmt.Sprint("a", i)), write(2, fmt.Sprint("b", i))}
		appendT(t, s, batch...)
		all = append(all, batch...)
	}
	s = o.Reopen(t, s)
	r := write(2, "after")
	appendT(t, s, r)
	all = append(all, r)
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("Seq %d after %d: not increasing (across a reopen too)", all[i].Seq, all[i-1].Seq)
		}
	}
}

func testEveryFieldRoundTrips(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 9)
	long := string(slices.Repeat([]byte("d/"), 3000)) + "f"
	in := []*checkpoint.Record{
		{Period: 9, Run: 1<<40 + 3, Op: checkpoint.OpRename, Flags: checkpoint.FlagDir | checkpoint.FlagExchange,
			Ino: 1<<63 + 5, Parent: 11, Parent2: 1<<62 + 1, Ino2: 13, Time: time.Unix(1_700_000_001, 999_999_999),
			Path: "dir/old name", Path2: "other/new\nname"},
		{Period: 9, Run: 2, Op: checkpoint.OpEntries, Flags: checkpoint.FlagFine | checkpoint.FlagDerived,
			Path: "x", Consumer: "backup"},
		{Period: 9, Run: 2, Op: checkpoint.OpRename, Flags: checkpoint.FlagDir | checkpoint.FlagDerived | checkpoint.FlagCarried,
			Ino: 4, Path: "old", Path2: "new", Consumer: "backup"},
		{Period: 9, Run: 2, Op: checkpoint.OpRoster, Flags: checkpoint.FlagDir | checkpoint.FlagNames, Path: "",
			Names: []string{"a", "b\nc", "ü"}},
		{Period: 9, Run: 2, Op: checkpoint.OpEntries, Flags: checkpoint.FlagDir | checkpoint.FlagNames, Path: "empty"},
		{Period: 8, Run: 2, Op: checkpoint.OpWrite, Path: long},
		{Period: 9, Run: 2, Op: checkpoint.OpUnlink, Parent: 4, Path: "ü/é"},
	}
	want := make([]checkpoint.Record, len(in))
	appendT(t, s, in...)
	for i, r := range in {
		want[i] = *r
	}
	slices.SortStableFunc(want, func(a, b checkpoint.Record) int {
		if a.Period != b.Period {
			return int(a.Period) - int(b.Period)
		}
		return int(a.Seq) - int(b.Seq)
	})
	check := func(when string, s checkpoint.Store) {
		got := ScanAll(t, s, 0)
		if len(got) != len(want) {
			t.Fatalf("%s: %d records scanned, %d appended", when, len(got), len(want))
		}
		for i := range want {
			if g := got[i].R; !g.Time.Equal(want[i].Time) || !reflect.DeepEqual(withoutTime(g), withoutTime(want[i])) {
				t.Errorf("%s: record %d reads back as\n%+v, appended as\n%+v", when, i, g, want[i])
			}
		}
	}
	check("before a reopen", s)
	check("after a reopen", o.Reopen(t, s))
}

func withoutTime(r checkpoint.Record) checkpoint.Record {
	r.Time = time.Time{}
	return r
}

func testScanOrderAndFrom(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 3)
	appendT(t, s, write(3, "c1"), write(1, "a1"))
	appendT(t, s, write(2, "b1"), write(1, "a2"), write(3, "c2"))
	var paths []string
	for _, r := range ScanAll(t, s, 0) {
		paths = append(paths, r.R.Path)
	}
	if want := []string{"a1", "a2", "b1", "c1", "c2"}; !slices.Equal(paths, want) {
		t.Errorf("Scan(0) gives %q, want %q (by period, then seq)", paths, want)
	}
	paths = nil
	for _, r := range ScanAll(t, s, 2) {
		paths = append(paths, r.R.Path)
	}
	if want := []string{"b1", "c1", "c2"}; !slices.Equal(paths, want) {
		t.Errorf("Scan(2) gives %q, want %q", paths, want)
	}
	if got := ScanAll(t, s, 4); len(got) != 0 {
		t.Errorf("Scan(4) gives %d records of lower periods", len(got))
	}
}

func testScanStopsOnError(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 1)
	appendT(t, s, write(1, "a"), write(1, "b"), write(1, "c"))
	stop := errors.New("stop here")
	calls := 0
	err := s.Scan(0, func(*checkpoint.Record, bool) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Scan returned %v after %d calls; want fn's error after 1", err, calls)
	}
}

// The tracker completes and re-records while it scans (recovery,
// queries): fn may call the store.
func testScanMayCallTheStore(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 1)
	appendT(t, s, write(1, "a"), write(1, "b"))
	done := make(chan error, 1)
	go func() {
		done <- s.Scan(0, func(r *checkpoint.Record, _ bool) error {
			if err := s.Complete(r.Period, r.Seq); err != nil {
				return err
			}
			return s.Append([]*checkpoint.Record{write(1, "from-scan-"+r.Path)})
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Scan calling Complete and Append: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Scan calling Complete and Append did not return in 30 s (deadlock?)")
	}
	n := 0
	for _, r := range ScanAll(t, s, 0) {
		if r.R.Path == "a" || r.R.Path == "b" {
			if !r.Completed {
				t.Errorf("%s not completed", r.R.Path)
			}
			continue
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d records appended from inside Scan, want 2", n)
	}
}

func testCompleteAndReopen(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 1)
	a, b, c := write(1, "a"), write(1, "b"), write(1, "c")
	appendT(t, s, a, b, c)
	for _, r := range []*checkpoint.Record{a, b} {
		if err := s.Complete(r.Period, r.Seq); err != nil {
			t.Fatalf("Complete: %v", err)
		}
	}
	if err := s.Reopen(b.Period, b.Seq); err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	want := map[string]bool{"a": true, "b": false, "c": false}
	for _, r := range ScanAll(t, s, 0) {
		if r.Completed != want[r.R.Path] {
			t.Errorf("%s: completed %v, want %v", r.R.Path, r.Completed, want[r.R.Path])
		}
	}
	// Reopen is durable when it returns; a Complete may be lost by a
	// crash, which only reports its intent in flight.
	s = o.Reopen(t, s)
	for _, r := range ScanAll(t, s, 0) {
		if r.R.Path != "a" && r.Completed {
			t.Errorf("after a reopen, %s is completed: a Reopen or no Complete at all left it in flight", r.R.Path)
		}
	}
}

func testStateRoundTrips(t *testing.T, o Opener) {
	s := o.Open(t)
	st := checkpoint.State{
		Current: 12, LastQuery: 11, LastBlessed: 9, Run: 4, Clean: true, Full: true,
		RecoveredAt: 10, LastUncleanRun: 3, NotQueries: []uint64{10, 12},
		QueryTime: 1_700_000_000, BlessTime: 1_700_000_100, BlessedBy: "sync to host:/dest", BlessSeq: 1 << 40,
		Consumers: []checkpoint.Consumer{
			{Name: "backup", LastQuery: 11, LastBlessed: 7, Queries: []uint64{8, 11}, RecoveredAt: 10,
				Full: true, Reset: true, Added: 1_600_000_000, QueryTime: 1_700_000_001, BlessTime: 1_700_000_002,
				BlessedBy: "me", BlessSeq: 77},
			{Name: "z", LastBlessed: 9, BlessSeq: 78},
		},
	}
	if err := s.SaveState(st); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	want := st.Clone()
	st.NotQueries[0], st.Consumers[0].Queries[0] = 99, 99 // the store must not share the caller's slices
	st = want
	for _, when := range []string{"before a reopen", "after a reopen"} {
		if when == "after a reopen" {
			s = o.Reopen(t, s)
		}
		got, err := s.LoadState()
		if err != nil {
			t.Fatalf("%s: LoadState: %v", when, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the state reads back as\n%+v, saved as\n%+v", when, got, want)
		}
	}
	st.Clean, st.Full, st.Consumers, st.NotQueries = false, false, nil, nil
	st.Current, st.LastQuery, st.LastBlessed = 13, 13, 13
	if err := s.SaveState(st); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	s = o.Reopen(t, s)
	got, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("a second state reads back as\n%+v, saved as\n%+v", got, st)
	}
}

func testDropBefore(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 3)
	recs := []*checkpoint.Record{write(1, "a"), write(2, "b"), write(3, "c")}
	appendT(t, s, recs...)
	for _, r := range recs {
		if err := s.Complete(r.Period, r.Seq); err != nil {
			t.Fatalf("Complete: %v", err)
		}
	}
	st, _ := s.LoadState()
	st.LastQuery, st.LastBlessed = 3, 3
	if err := s.SaveState(st); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	if err := s.DropBefore(3); err != nil {
		t.Fatalf("DropBefore: %v", err)
	}
	for _, when := range []string{"before a reopen", "after a reopen"} {
		if when == "after a reopen" {
			s = o.Reopen(t, s)
		}
		got := ScanAll(t, s, 0)
		if len(got) != 1 || got[0].R.Path != "c" || !got[0].Completed && when == "before a reopen" {
			t.Fatalf("%s, after DropBefore(3): %+v, want only c, completed", when, got)
		}
	}
}

func testConcurrentAppends(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 1)
	const writers, each = 8, 40
	syncs0 := s.Syncs()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append([]*checkpoint.Record{write(1, fmt.Sprintf("w%d/%d", w, i))}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Append: %v", err)
	}
	got := ScanAll(t, s, 0)
	seqs := make(map[uint64]bool)
	for _, r := range got {
		if seqs[r.R.Seq] {
			t.Errorf("Seq %d given twice", r.R.Seq)
		}
		seqs[r.R.Seq] = true
	}
	if len(got) != writers*each {
		t.Errorf("%d records after %d concurrent appends", len(got), writers*each)
	}
	if n := s.Syncs() - syncs0; n == 0 || n > writers*each {
		t.Errorf("%d syncs for %d appends: each Append is synced, and group commit may share them", n, writers*each)
	}
}

// testAppendAsync: queued records are written before every later Scan,
// Append and SaveState (coarse mode relies on it), with Seqs after those
// of the records appended before them.
func testAppendAsync(t *testing.T, o Opener) {
	s := o.Open(t)
	as, ok := s.(checkpoint.AsyncStore)
	if !ok {
		t.Skip("not an AsyncStore")
	}
	begin(t, s, 1)
	first := write(1, "synced")
	appendT(t, s, first)
	as.AppendAsync([]*checkpoint.Record{write(1, "queued-1"), write(1, "queued-2")})
	var paths []string
	var last uint64
	for _, r := range ScanAll(t, s, 0) {
		paths = append(paths, r.R.Path)
		if r.R.Seq <= last {
			t.Errorf("%s has Seq %d after %d", r.R.Path, r.R.Seq, last)
		}
		last = r.R.Seq
	}
	if want := []string{"synced", "queued-1", "queued-2"}; !slices.Equal(paths, want) {
		t.Errorf("a Scan after AppendAsync gives %q, want %q", paths, want)
	}
	as.AppendAsync([]*checkpoint.Record{write(1, "queued-3")})
	appendT(t, s, write(1, "synced-2"))
	if as.Lost() {
		t.Errorf("Lost after writes that all succeeded")
	}
	s = o.Reopen(t, s)
	paths = nil
	for _, r := range ScanAll(t, s, 0) {
		paths = append(paths, r.R.Path)
	}
	if want := []string{"synced", "queued-1", "queued-2", "queued-3", "synced-2"}; !slices.Equal(paths, want) {
		t.Errorf("after an Append and a reopen: %q, want %q (the queue is synced with the Append)", paths, want)
	}
}

// testLastSeq: LastSeq is at least the Seq of every record appended or
// queued before it, and below that of every record appended after it,
// across a reopen too (the old names rely on it: oldnames.go).
func testLastSeq(t *testing.T, o Opener) {
	s := o.Open(t)
	begin(t, s, 1)
	before := write(1, "before")
	appendT(t, s, before)
	var queued *checkpoint.Record
	if as, ok := s.(checkpoint.AsyncStore); ok {
		queued = write(1, "queued")
		as.AppendAsync([]*checkpoint.Record{queued})
	}
	seq, err := s.LastSeq()
	if err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	for _, r := range ScanAll(t, s, 0) {
		if r.R.Seq > seq {
			t.Errorf("%s, appended or queued before LastSeq, has Seq %d > %d", r.R.Path, r.R.Seq, seq)
		}
	}
	if queued != nil && len(ScanAll(t, s, 0)) != 2 {
		t.Errorf("LastSeq did not write the queue: %d records", len(ScanAll(t, s, 0)))
	}
	after := write(1, "after")
	appendT(t, s, after)
	if after.Seq <= seq {
		t.Errorf("a record appended after LastSeq=%d has Seq %d", seq, after.Seq)
	}
	s = o.Reopen(t, s)
	again, err := s.LastSeq()
	if err != nil {
		t.Fatalf("LastSeq after a reopen: %v", err)
	}
	if again < after.Seq {
		t.Errorf("after a reopen LastSeq = %d, below the Seq %d of a synced record", again, after.Seq)
	}
	later := write(1, "later")
	appendT(t, s, later)
	if later.Seq <= again {
		t.Errorf("after a reopen, a record appended after LastSeq=%d has Seq %d", again, later.Seq)
	}
}
