package checkpoint

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// Bless: ids, the syncfs before the state, and failures that discard
// nothing.

func TestBlessIDs(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if _, err := f.tr.Bless(0); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("Bless(0) before any query: %v, want ErrUnknownQuery", err)
	}
	if _, err := f.tr.Bless(1); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("Bless(1) before any query: %v, want ErrUnknownQuery", err)
	}
	f.mod(OpWrite, "a")
	q1 := f.query()
	f.mod(OpWrite, "b")
	q2 := f.query()
	if _, err := f.tr.Bless(q2.Query + 1); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("Bless(%d) above the latest query: %v, want ErrUnknownQuery", q2.Query+1, err)
	}
	if got := f.bless(0); got != q2.Query {
		t.Fatalf("Bless(0) blessed %d, want the latest query %d", got, q2.Query)
	}
	if st := f.status(); st.LastBlessed != q2.Query || st.PendingPaths != 0 {
		t.Fatalf("status after bless: %+v", st)
	}
	// Retries and older ids: succeed, change nothing, no syncfs, no save.
	syncfs, syncs := f.back.syncfsCount(), f.store.Syncs()
	for _, id := range []uint64{q2.Query, q1.Query, 1} {
		got, err := f.tr.Bless(id)
		if err != nil || got != id {
			t.Fatalf("Bless(%d) at or below the last bless: %d, %v; want %d, nil", id, got, err, id)
		}
	}
	if f.back.syncfsCount() != syncfs || f.store.Syncs() != syncs {
		t.Fatal("a bless at or below the last bless did syncfs or saved the state")
	}
	if st := f.store.durableState(); st.LastBlessed != q2.Query {
		t.Fatalf("durable LastBlessed %d, want %d", st.LastBlessed, q2.Query)
	}
}

// Bless makes BACKING durable before it saves the state, and discards
// records only after that.
func TestBlessSyncfsBeforeStateSaved(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	q := f.query()
	start := len(f.ev.all())
	f.bless(q.Query)
	f.tr.Close() // waits for the background DropBefore
	sync := f.ev.index("syncfs", start)
	save := f.ev.index(fmt.Sprintf("savestate current=%d query=%d blessed=%d", q.Query, q.Query, q.Query), start)
	drop := f.ev.index(fmt.Sprintf("dropbefore %d", q.Query), start)
	if sync < 0 || save < 0 || drop < 0 || !(sync < save && save < drop) {
		t.Fatalf("bless events: syncfs at %d, savestate at %d, dropbefore at %d; want them in that order:\n%s",
			sync, save, drop, strings.Join(f.ev.all()[start:], "\n"))
	}
}

func TestBlessSyncfsErrorDiscardsNothing(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	q := f.query()
	nrec := len(f.store.records())
	f.back.failNextSyncfs(syscall.EIO)
	start := len(f.ev.all())
	if _, err := f.tr.Bless(q.Query); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Bless with a failing syncfs: %v, want EIO", err)
	}
	f.tr.gcWG.Wait()
	if i := f.ev.index("savestate", start); i >= 0 {
		t.Fatalf("the state was saved after syncfs failed: %s", f.ev.all()[i])
	}
	if i := f.ev.index("dropbefore", start); i >= 0 {
		t.Fatal("records were discarded after syncfs failed")
	}
	if st := f.store.durableState(); st.LastBlessed != 0 {
		t.Fatalf("durable LastBlessed %d after a failed bless", st.LastBlessed)
	}
	if n := len(f.store.records()); n != nrec {
		t.Fatalf("%d records, want %d", n, nrec)
	}
	wantPaths(t, f.query(), "a")
	// The consumer retries and succeeds.
	f.bless(0)
}

func TestBlessSaveStateErrorDiscardsNothing(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	q := f.query()
	f.store.failNextSaveState(syscall.ENOSPC)
	if _, err := f.tr.Bless(q.Query); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Bless with a failing SaveState: %v, want ENOSPC", err)
	}
	f.tr.gcWG.Wait()
	if st := f.status(); st.LastBlessed != 0 || st.PendingPaths != 1 {
		t.Fatalf("status after a failed bless: %+v", st)
	}
	wantPaths(t, f.query(), "a")
}

func TestCheckpointIsNotBlessable(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	c, err := f.tr.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.tr.Bless(c); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("Bless(%d) of a checkpoint: %v, want ErrUnknownQuery", c, err)
	}
	if _, err := f.tr.Bless(0); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("Bless(0) with only a checkpoint: %v, want ErrUnknownQuery", err)
	}
	if st := f.status(); st.LastQuery != 0 || st.Current != c {
		t.Fatalf("status after a checkpoint: %+v", st)
	}
}

// Found as a bug, fixed since (State.NotQueries): "An ID that no query
// returned fails with EINVAL". Bless accepted
// every id up to the latest query, so the id of a checkpoint (or of a
// query that failed, or a period skipped by recovery) followed by a
// query is blessed instead of refused.
func TestBlessRefusesIDsNoQueryReturned(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	c, err := f.tr.Checkpoint() // period 2: not a query
	if err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "b")
	q := f.query() // period 3
	if got, err := f.tr.Bless(c); !errors.Is(err, ErrUnknownQuery) {
		t.Errorf("Bless(%d), the id of a checkpoint, after query %d: returned %d, %v; want ErrUnknownQuery "+
			"(contract: an ID that no query returned fails with EINVAL)", c, q.Query, got, err)
	}
}

// ---------------------------------------------------------------------
// Files open for writing

// Found as a bug (contract D3, power cuts), fixed since (Bless refuses an
// id below State.RecoveredAt): after a power cut, BACKING may have lost
// writes that the consumer had already copied for the query it had not
// yet blessed. Blessing that pre-crash query then discards the records
// that would have made the next query list those paths again, and DEST
// keeps content that BACKING does not have, forever. Bless should refuse
// (EINVAL, "query again") an id below the pending recovery period
// (State.RecoveredAt), and the contract should say so.
func TestBlessOfPreCrashQueryAfterPowerCut(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.back.apply(bop{kind: "write", path: "f", ino: 1})
	f.mod(OpWrite, "f")
	f.bless(f.query().Query)                // the consumer copied f v1
	if err := f.back.Syncfs(); err != nil { // f v1 is durable
		t.Fatal(err)
	}
	f.mod(OpWrite, "f") // period q: write f v2, not synced
	f.back.apply(bop{kind: "write", path: "f", ino: 1})
	q2 := f.query()
	v2, _ := f.back.get("f")
	// The consumer copies f v2 for q2, then the machine loses power
	// before the consumer blesses; BACKING comes back with f v1.
	f.store = f.store.crash(true)
	f.back = f.back.crash(true, func(int, bop) bool { return false })
	f.mount()
	v1, _ := f.back.get("f")
	if v1.ver == v2.ver {
		t.Fatal("test setup: the power cut did not undo the write")
	}
	// The consumer, on another machine, blesses what it copied.
	if _, err := f.tr.Bless(q2.Query); err == nil {
		a := f.query()
		if entryOf(a, "f") == nil {
			t.Errorf("bless %d of a query from before the power cut succeeded, and the next query does not list f: "+
				"DEST keeps f v%d, BACKING has f v%d", q2.Query, v2.ver, v1.ver)
		}
	}
}

// A regression test (contract "Bless": an ID that no query returned fails
// with EINVAL). That includes the id of a query that failed after it
// started its period (here its final SaveState), once a later query has
// returned: the failed query's period counts as one no query returned.
func TestBlessRefusesIDOfFailedQuery(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	f.mod(OpWrite, "a")
	// The query's first SaveState (Current = P) succeeds, its last one
	// (LastQuery = P) fails.
	failLastSave := &failNth{n: 2, err: syscall.EIO}
	f.store.saveHook = failLastSave.hook
	_, err := f.tr.Query()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Query with a failing final SaveState: %v", err)
	}
	failed := f.tr.Current()
	f.store.saveHook = nil
	q := f.query()
	if got, err := f.tr.Bless(failed); !errors.Is(err, ErrUnknownQuery) {
		t.Errorf("Bless(%d), the id of a query that failed, after query %d: returned %d, %v; want ErrUnknownQuery",
			failed, q.Query, got, err)
	}
}

// failNth fails the n-th call (1-based) with err.
type failNth struct {
	n, calls int
	err      error
}
