package checkpoint

import (
	"errors"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
)

// Files open for writing: re-recorded by queries, Touch, renames.

func TestOpenWriteRerecordedByQueries(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	h, err := f.tr.OpenWrite(staticPath("f"), 5, OpCreate, OpTruncate)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.store.records()); n != 3 {
		t.Fatalf("OpenWrite with create and truncate: %d records, want 3 (write, create, truncate)", n)
	}
	if st := f.status(); st.OpenForWrite != 1 || st.InFlight != 0 {
		t.Fatalf("status with an open file: %+v", st)
	}
	q1 := f.query()
	wantPaths(t, q1, "f")
	if e := entryOf(q1, "f"); !slices.Equal(e.Ops, []string{"write", "truncate", "create"}) || e.Period != 1 {
		t.Fatalf("f: %+v", *e)
	}
	// The query re-recorded the open file in its own period.
	var inQ1 int
	for _, r := range f.store.records() {
		if r.r.Period == q1.Query && r.r.Path == "f" && r.r.Op == OpWrite {
			inQ1++
		}
	}
	if inQ1 != 1 {
		t.Fatalf("%d write records of f in period %d, want 1 (re-recorded by the query)", inQ1, q1.Query)
	}
	f.bless(q1.Query)
	// Still pending: the file is still open, writes (mmap too) may come.
	if st := f.status(); st.PendingPaths != 1 {
		t.Fatalf("pending paths %d after the bless, want 1 (the open file)", st.PendingPaths)
	}
	q2 := f.query()
	wantPaths(t, q2, "f")
	if e := entryOf(q2, "f"); e.Period != q1.Query {
		t.Fatalf("f: first unblessed period %d, want %d", e.Period, q1.Query)
	}
	h.Release()
	f.bless(q2.Query)
	// Released after q2 started: its record of period q2 stays until a
	// later query lists it and is blessed.
	q3 := f.query()
	wantPaths(t, q3, "f")
	f.bless(q3.Query)
	wantPaths(t, f.query())
	f.complete()
	for _, r := range f.store.records() {
		if !r.done {
			t.Fatalf("record %+v not completed after Release", r.r)
		}
	}
}

func TestTouch(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	h, err := f.tr.OpenWrite(staticPath("f"), 5)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	n := f.appends()
	for i := 0; i < 3; i++ {
		if err := h.Touch(); err != nil {
			t.Fatal(err)
		}
	}
	if f.appends() != n {
		t.Fatal("Touch appended although the handle is recorded in the current period")
	}
	// A query re-records the handle: Touch stays a no-op.
	f.query()
	n = f.appends()
	if err := h.Touch(); err != nil || f.appends() != n {
		t.Fatalf("Touch after the query re-recorded the handle: %v, %d appends", err, f.appends()-n)
	}
	// If the re-record fails, the query fails and Touch records the
	// handle in the new period itself.
	f.store.failNextAppend(syscall.EIO)
	if _, err := f.tr.Query(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Query with a failing re-record: %v, want EIO", err)
	}
	cur := f.tr.Current()
	n = f.appends()
	f.store.failNextAppend(syscall.ENOSPC)
	if err := h.Touch(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Touch with a failing Append: %v, want ENOSPC", err)
	}
	if err := h.Touch(); err != nil {
		t.Fatal(err)
	}
	if f.appends() != n+1 {
		t.Fatalf("Touch in a period without a record of the handle: %d appends, want 1", f.appends()-n)
	}
	found := false
	for _, r := range f.store.records() {
		found = found || (r.r.Period == cur && r.r.Path == "f")
	}
	if !found {
		t.Fatalf("no record of f in period %d after Touch", cur)
	}
	n = f.appends()
	if err := h.Touch(); err != nil || f.appends() != n {
		t.Fatal("second Touch in the period appended")
	}
}

// The query re-records an open file under its current name.
func TestOpenWriteFollowsRename(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	var name atomic.Value
	name.Store("old")
	h, err := f.tr.OpenWrite(func() (string, bool) {
		n := name.Load().(string)
		return n, n != ""
	}, 9)
	if err != nil {
		t.Fatal(err)
	}
	q1 := f.query()
	f.bless(q1.Query)
	f.begin(Intent{Op: OpRename, Path: "old", Path2: "new"}).End()
	name.Store("new")
	q2 := f.query()
	wantPaths(t, q2, "new", "old")
	f.bless(q2.Query)
	wantPaths(t, f.query(), "new")
	// Unlinked while open: nothing left to list once blessed.
	f.begin(Intent{Op: OpUnlink, Path: "new"}).End()
	name.Store("")
	q4 := f.query()
	f.bless(q4.Query)
	wantPaths(t, f.query())
	n := f.appends()
	if err := h.Touch(); err != nil || f.appends() != n {
		t.Fatal("Touch of an unlinked file appended")
	}
	h.Release()
}

// The filesystem's tree may apply a rename after the rename's token ended
// (go-fuse moves the inode after Rename returns). A query must take the
// paths of the open files only after the settler says the tree caught
// up, or a file open for writing stays recorded under its old name alone.
func TestPathSettlerRunsBeforeOpenFilesAreRerecorded(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	var name atomic.Value
	name.Store("old")
	h, err := f.tr.OpenWrite(func() (string, bool) { return name.Load().(string), true }, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	f.bless(f.query().Query)
	// The rename is done and its token ended; the tree still says "old".
	f.begin(Intent{Op: OpRename, Path: "old", Path2: "new"}).End()
	settled := 0
	f.tr.SetPathSettler(func() { settled++; name.Store("new") })
	q := f.query()
	if settled != 1 {
		t.Fatalf("settler called %d times by one query, want 1", settled)
	}
	wantPaths(t, q, "new", "old")
	f.bless(q.Query)
	// The open file's record in the new period is under its new name.
	wantPaths(t, f.query(), "new")
}

// ---------------------------------------------------------------------
// Crashes and recovery

// A regression test (D3, no crash needed). A file open for writing is
// recorded under its name at open and at each re-record. If a rename of
// its directory was begun in an earlier period but reaches BACKING after
// the open, the writes through the handle go to the new name, and the
// only record that named it was the rename's, in that earlier period,
// which the bless of the next query discards. The handle's record now
// follows the name, so writes through the handle after that answer are
// listed by the following query (here: a/x, written after query Q1
// answered, is in query Q2's answer while the handle's period Q1 is not
// blessed).
func TestOpenFileRenamedByEarlierPeriodRename(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	dest := make(map[string]bnode)
	copyAll := func(a *Answer) {
		for _, p := range plainPaths(a) {
			rsyncCopy(dest, f.back, p)
		}
	}
	tok := f.begin(Intent{Op: OpMkdir, Flags: FlagDir, Path: "c"})
	f.back.apply(bop{kind: "mkdir", path: "c", ino: 1})
	tok.End()
	q0 := f.query()
	copyAll(q0)
	f.bless(q0.Query)

	rename := f.begin(Intent{Op: OpRename, Flags: FlagDir, Ino: 1, Path: "c", Path2: "a"}) // period q0
	var q1 *Answer
	queried := make(chan struct{})
	go func() {
		defer close(queried)
		var err error
		q1, err = f.tr.Query()
		if err != nil {
			t.Error(err)
		}
	}()
	f.waitCurrent(q0.Query + 1)
	// In the new period: open c/x for writing (creating it).
	const ino = 2
	h, err := f.tr.OpenWrite(func() (string, bool) {
		if p, ok := f.back.pathOfIno(ino); ok {
			return p, true
		}
		return "c/x", true
	}, 0, OpCreate)
	if err != nil {
		t.Fatal(err)
	}
	f.back.apply(bop{kind: "write", path: "c/x", ino: ino})
	// The rename reaches BACKING, and ends: the query answers.
	f.back.apply(bop{kind: "rename", path: "c", path2: "a"})
	rename.End()
	<-queried
	if q1 == nil {
		t.FailNow()
	}
	copyAll(q1) // a/x as it is now
	if err := h.Touch(); err != nil {
		t.Fatal(err)
	}
	f.back.apply(bop{kind: "writeino", ino: ino}) // a write through the open file
	f.bless(q1.Query)
	h.Release()
	q2 := f.query()
	if entryOf(q2, "a/x") == nil {
		t.Errorf("a/x was written through an open file in period %d (not blessed), but query %d lists %q",
			q1.Query, q2.Query, paths(q2))
	}
	copyAll(q2)
	f.bless(q2.Query)
	for i := 0; i < 2; i++ {
		a := f.query()
		copyAll(a)
		f.bless(a.Query)
	}
	want, _ := f.back.get("a/x")
	if got := dest["a/x"]; got.ver != want.ver {
		t.Errorf("after more rounds DEST has a/x v%d, BACKING v%d: the write is never listed", got.ver, want.ver)
	}
}
