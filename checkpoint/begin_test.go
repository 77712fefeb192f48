package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Begin: dedup within a period, joins, group syncs and append failures.

func TestDedupWithinPeriod(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	n := f.appends()
	syncs := f.store.Syncs()
	f.mod(OpWrite, "a")
	f.mod(OpWrite, "a")
	if got := f.appends(); got != n {
		t.Fatalf("a second write of a in the same period appended (%d appends, want %d)", got, n)
	}
	if f.store.Syncs() != syncs {
		t.Fatalf("a deduplicated Begin synced the journal")
	}
	// Another op, or another path, is another intent.
	f.mod(OpChmod, "a")
	f.mod(OpWrite, "b")
	f.begin(Intent{Op: OpRename, Path: "a", Path2: "b"}).End()
	f.begin(Intent{Op: OpRename, Path: "a", Path2: "c"}).End()
	if got := f.appends(); got != n+4 {
		t.Fatalf("%d appends, want %d", got, n+4)
	}
	// After a query the period is new: the same write appends again, in
	// the new period.
	a := f.query()
	n = f.appends()
	f.mod(OpWrite, "a")
	if got := f.appends(); got != n+1 {
		t.Fatalf("write of a after query %d: %d appends, want %d", a.Query, got, n+1)
	}
	var periods []uint64
	for _, r := range f.store.records() {
		if r.r.Path == "a" && r.r.Op == OpWrite {
			periods = append(periods, r.r.Period)
		}
	}
	if !slices.Equal(periods, []uint64{1, a.Query}) {
		t.Fatalf("write records of a in periods %v, want [1 %d]", periods, a.Query)
	}
	// A Checkpoint starts a new period too.
	if _, err := f.tr.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	n = f.appends()
	f.mod(OpWrite, "a")
	if got := f.appends(); got != n+1 {
		t.Fatalf("write of a after a checkpoint: %d appends, want %d", got, n+1)
	}
}

// A joining modification takes back the completion of the intent it
// joins, and completes it again when it ends.
func TestDedupJoinReopensAndCompletes(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	if pendingCompletions(f.tr) != 1 {
		t.Fatal("the idle intent is not waiting for the completer")
	}
	f.complete()
	done := func() bool {
		for _, r := range f.store.records() {
			if r.r.Path == "a" {
				return r.done
			}
		}
		t.Fatal("no record of a")
		return false
	}
	if !done() {
		t.Fatal("the completed write of a has no completion")
	}
	tok := f.begin(Intent{Op: OpWrite, Path: "a"})
	if done() {
		t.Fatal("a write that joined the intent of a did not take its completion back (Reopen)")
	}
	tok2 := f.begin(Intent{Op: OpWrite, Path: "a"})
	tok.End()
	if done() {
		t.Fatal("the intent was completed while a modification still used it")
	}
	tok2.End()
	f.complete()
	if !done() {
		t.Fatal("the intent was not completed once every modification ended")
	}
}

func TestBeginOneSyncForSeveralIntents(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	syncs := f.store.Syncs()
	n := f.appends()
	f.begin(Intent{Op: OpChmod, Path: "a"}, Intent{Op: OpUtimens, Path: "a"}, Intent{Op: OpChown, Path: "a"}).End()
	if f.appends() != n+1 || f.store.Syncs() != syncs+1 {
		t.Fatalf("three intents of one operation took %d appends and %d syncs, want 1 and 1",
			f.appends()-n, f.store.Syncs()-syncs)
	}
	if got := len(f.store.records()); got != 3 {
		t.Fatalf("%d records, want 3", got)
	}
	// Two intents with the same key in one call share one record.
	f.begin(Intent{Op: OpWrite, Path: "b"}, Intent{Op: OpWrite, Path: "b"}).End()
	if got := len(f.store.records()); got != 4 {
		t.Fatalf("%d records, want 4", got)
	}
	if st := f.status(); st.InFlight != 0 {
		t.Fatalf("in flight %d after every End", st.InFlight)
	}
}

// Begin returns only once the intent is durable, and so does a second
// Begin that joins the intent while the first one's Append is running.
func TestBeginWaitsForAppend(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	entered := make(chan struct{})
	release := make(chan struct{})
	var held atomic.Bool
	f.store.appendHook = func(recs []*Record) {
		if recs[0].Path == "a" && held.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	first := make(chan struct{})
	var tok1 Token
	go func() {
		defer close(first)
		var err error
		tok1, err = f.tr.Begin(Intent{Op: OpWrite, Path: "a"})
		if err != nil {
			t.Errorf("Begin: %v", err)
		}
	}()
	<-entered
	second := make(chan struct{})
	var tok2 Token
	go func() {
		defer close(second)
		var err error
		tok2, err = f.tr.Begin(Intent{Op: OpWrite, Path: "a"})
		if err != nil {
			t.Errorf("joining Begin: %v", err)
		}
	}()
	if waitDone(first, 50*time.Millisecond) {
		t.Fatal("Begin returned while its Append had not returned")
	}
	if waitDone(second, 10*time.Millisecond) {
		t.Fatal("a Begin that joins an intent returned before that intent was durable")
	}
	n := f.appends()
	close(release)
	if !waitDone(first, 5*time.Second) || !waitDone(second, 5*time.Second) {
		t.Fatal("Begin did not return after its Append did")
	}
	if got := f.appends(); got != n+1 {
		t.Fatalf("%d appends for two Begins of the same intent, want 1", got-n)
	}
	tok1.End()
	tok2.End()
}

func TestBeginAppendErrorRetries(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := newFixture(t, memStoreOpts{})
			f.store.failNextAppend(errno)
			_, err := f.tr.Begin(Intent{Op: OpWrite, Path: "a"})
			if !errors.Is(err, errno) {
				t.Fatalf("Begin with a failing Append: %v, want an error wrapping %v", err, errno)
			}
			if n := len(f.store.records()); n != 0 {
				t.Fatalf("%d records after a failed Append", n)
			}
			if st := f.status(); st.InFlight != 0 {
				t.Fatalf("a failed Begin left %d modifications in flight", st.InFlight)
			}
			// No dedup entry was left: the next Begin appends again.
			n := f.appends()
			f.mod(OpWrite, "a")
			if f.appends() != n+1 {
				t.Fatal("the Begin after a failed Append did not append (a dedup entry of the failed intent was left)")
			}
			a := f.query()
			wantPaths(t, a, "a")
		})
	}
}

// A Begin that joins an intent whose Append fails fails too.
func TestBeginJoinerOfFailedAppendFails(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	f.store.appendHook = func(recs []*Record) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
	}
	f.store.failNextAppend(syscall.EIO)
	errs := make(chan error, 2)
	go func() {
		_, err := f.tr.Begin(Intent{Op: OpWrite, Path: "a"})
		errs <- err
	}()
	<-entered // the intent of a is in the dedup set, its Append is held
	go func() {
		tok, err := f.tr.Begin(Intent{Op: OpWrite, Path: "a"})
		if err == nil {
			tok.End()
		}
		errs <- err
	}()
	// The second Begin joins the entry and waits for it: it returns
	// only after the first one's Append returned.
	select {
	case err := <-errs:
		t.Fatalf("a Begin returned (%v) while the intent it joins was not durable", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-errs; !errors.Is(err, syscall.EIO) {
			t.Fatalf("Begin: %v, want EIO (the first by its Append, the second by joining it)", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d Appends, want 1 (the second Begin must join)", n)
	}
	if st := f.status(); st.InFlight != 0 {
		t.Fatalf("%d in flight", st.InFlight)
	}
	// Nothing was left behind: the next Begin appends.
	f.mod(OpWrite, "a")
	wantPaths(t, f.query(), "a")
}

// A Begin joining a still-open intent in a multi-intent call, where a
// fresh one fails, must not leave references behind.
func TestBeginPartialFailureReleasesJoined(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	tok := f.begin(Intent{Op: OpWrite, Path: "a"})
	f.store.failNextAppend(syscall.EIO)
	if _, err := f.tr.Begin(Intent{Op: OpWrite, Path: "a"}, Intent{Op: OpChmod, Path: "a"}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Begin: %v, want EIO", err)
	}
	tok.End()
	f.complete()
	for _, r := range f.store.records() {
		if !r.done {
			t.Fatalf("record %+v has no completion after every modification ended", r.r)
		}
	}
}

func TestRecordsCarryRunAndPeriod(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	f.crash(false)
	f.mod(OpWrite, "b")
	var got []string
	for _, r := range f.store.records() {
		got = append(got, fmt.Sprintf("%s:p%d:r%d", r.r.Path, r.r.Period, r.r.Run))
	}
	if !slices.Equal(got, []string{"a:p1:r1", "b:p2:r2"}) {
		t.Fatalf("records %v", got)
	}
	if st := f.status(); st.Run != 2 || st.Current != 2 || st.JournalSyncs == 0 {
		t.Fatalf("status %+v", st)
	}
}
