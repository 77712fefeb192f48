package checkpoint

import (
	"errors"
	"testing"
	"time"
)

func (f *fixture) queryFor(name string) *Answer {
	f.t.Helper()
	a, err := f.tr.QueryFor(name)
	if err != nil {
		f.t.Fatalf("QueryFor(%q): %v", name, err)
	}
	return a
}

func (f *fixture) blessFor(name string, id uint64) {
	f.t.Helper()
	if _, err := f.tr.BlessFor(name, id); err != nil {
		f.t.Fatalf("BlessFor(%q, %d): %v", name, id, err)
	}
}

// blessFull blesses as a consumer that copied the whole tree.
func (f *fixture) blessFull(name string, id uint64) {
	f.t.Helper()
	if _, err := f.tr.BlessWith(Blessing{Consumer: name, ID: id, Full: true}); err != nil {
		f.t.Fatalf("BlessWith(%q, %d, full): %v", name, id, err)
	}
}

// records counts the records the store still holds.
func (f *fixture) records() int {
	n := 0
	f.store.store().Scan(0, func(*Record, bool) error { n++; return nil })
	return n
}

// Each consumer answers from its own last bless; a record goes only once
// every consumer has blessed past it.
func TestConsumersHaveTheirOwnCursors(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("backup"); err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "a")
	a := f.queryFor("backup")
	if !a.Full {
		t.Errorf("a new consumer's first answer does not say full")
	}
	wantPaths(t, a, "a")
	d := f.query()
	wantPaths(t, d, "a")
	f.bless(d.Query) // the default is done with a
	f.mod(OpWrite, "b")
	wantPaths(t, f.query(), "b")
	// backup has not blessed: a is still there for it.
	b := f.queryFor("backup")
	wantPaths(t, b, "a", "b")
	if !b.Full {
		t.Errorf("full must be said until the consumer's first bless")
	}
	if f.records() == 0 {
		t.Fatalf("records discarded while a consumer still needs them")
	}
	// A bless of a full answer that does not say full is refused, and
	// changes nothing.
	if _, err := f.tr.BlessFor("backup", b.Query); !errors.Is(err, ErrFullCopy) {
		t.Fatalf("bless of a full answer without full: %v, want ErrFullCopy", err)
	}
	if c := f.queryFor("backup"); !c.Full || c.Blessed != b.Blessed {
		t.Fatalf("after the refused bless: full %v, blessed %d; want full, blessed %d", c.Full, c.Blessed, b.Blessed)
	}
	b = f.queryFor("backup")
	if _, err := f.tr.BlessWith(Blessing{Consumer: "backup", ID: b.Query, Full: true, By: "sync 1 /m"}); err != nil {
		t.Fatal(err)
	}
	c := f.queryFor("backup")
	wantPaths(t, c)
	if c.Full || c.BlessedBy != "sync 1 /m" || c.Blessed != b.Query {
		t.Errorf("after the bless: full %v, blessed %d by %q; want not full, %d by sync 1 /m", c.Full, c.Blessed, c.BlessedBy, b.Query)
	}
	// A later bless that names no one says so.
	f.blessFor("backup", c.Query)
	if d := f.queryFor("backup"); d.BlessedBy != "" {
		t.Errorf("a bless that named no one: blessed_by %q", d.BlessedBy)
	}
	_, cs, err := f.tr.Status()
	if err != nil || cs[0].QueryTime == 0 || cs[0].BlessTime == 0 {
		t.Errorf("the default consumer's times are not kept: %+v, %v", cs, err)
	}
}

// A consumer may bless only its own queries.
func TestConsumersBlessOnlyTheirOwnQueries(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	for _, n := range []string{"x", "y"} {
		if err := f.tr.AddConsumer(n); err != nil {
			t.Fatal(err)
		}
	}
	f.mod(OpWrite, "a")
	qx := f.queryFor("x").Query
	qy := f.queryFor("y").Query
	qd := f.query().Query
	for _, c := range []struct {
		name string
		id   uint64
	}{{"y", qx}, {"x", qd}, {"", qx}, {"", qy}} {
		if _, err := f.tr.BlessFor(c.name, c.id); !errors.Is(err, ErrUnknownQuery) {
			t.Errorf("consumer %q blessing query %d (not its own): %v, want ErrUnknownQuery", c.name, c.id, err)
		}
	}
	if _, err := f.tr.QueryFor("nobody"); !errors.Is(err, ErrUnknownConsumer) {
		t.Errorf("query of an unknown consumer: %v", err)
	}
	if err := f.tr.AddConsumer("x"); !errors.Is(err, ErrConsumerExists) {
		t.Errorf("adding x twice: %v", err)
	}
	for _, bad := range []string{"", "default", ".hidden", "a/b", "a b"} {
		if err := f.tr.AddConsumer(bad); !errors.Is(err, ErrBadConsumerName) {
			t.Errorf("AddConsumer(%q): %v, want ErrBadConsumerName", bad, err)
		}
	}
}

// Cursors are durable, and a crash makes every consumer's pre-crash
// queries unblessable, as the default's.
func TestConsumersSurviveCrashes(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("c"); err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "a")
	q := f.queryFor("c").Query
	f.crash(true)
	if _, err := f.tr.BlessFor("c", q); !errors.Is(err, ErrUnknownQuery) {
		t.Errorf("bless of a query answered before the crash: %v", err)
	}
	a := f.queryFor("c")
	if !a.Recovered {
		t.Errorf("the first answer after a crash does not say recovered")
	}
	wantPaths(t, a, "a")
	f.blessFull("c", a.Query)
	if a := f.queryFor("c"); a.Recovered {
		t.Errorf("recovered still said after a bless")
	}
}

// Removing the consumer that held the oldest records lets them go.
func TestConsumerRemoveDiscards(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("slow"); err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "a")
	f.bless(f.query().Query)
	if err := f.tr.RemoveConsumer("slow"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.records() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := f.records(); n > 0 {
		t.Errorf("%d records left after the only consumer that needed them was removed", n)
	}
	if err := f.tr.RemoveConsumer("slow"); !errors.Is(err, ErrUnknownConsumer) {
		t.Errorf("removing it twice: %v", err)
	}
}

// The lag policy resets a consumer that has not blessed in time: its
// backlog goes, and its next answer says reset and full.
func TestConsumerLagPolicy(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("late"); err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "a")
	f.bless(f.query().Query)
	f.tr.maxLag = time.Nanosecond
	time.Sleep(1100 * time.Millisecond) // times are kept in seconds
	a := f.queryFor("late")
	if !a.Reset || !a.Full {
		t.Errorf("answer after the lag: reset %v full %v, want both", a.Reset, a.Full)
	}
	wantPaths(t, a)
	_, cs, err := f.tr.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[1].Name != "late" || !cs[1].Reset {
		t.Errorf("consumer list: %+v", cs)
	}
}

// Consumers lists pending paths and the oldest unblessed age per consumer.
func TestConsumerList(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("c"); err != nil {
		t.Fatal(err)
	}
	f.mod(OpWrite, "a")
	f.mod(OpWrite, "b")
	f.bless(f.query().Query)
	_, cs, err := f.tr.Status()
	if err != nil {
		t.Fatal(err)
	}
	if cs[0].Name != DefaultConsumer || cs[0].PendingPaths != 0 {
		t.Errorf("default: %+v, want nothing pending", cs[0])
	}
	if cs[1].Name != "c" || cs[1].PendingPaths != 2 || cs[1].OldestAge <= 0 {
		t.Errorf("c: %+v, want 2 pending and an age", cs[1])
	}
	// a again after the default's bless: pending for the default once,
	// and still once for c, which has it from before too (one set of
	// paths serves every cursor: the latest period that names each).
	f.mod(OpWrite, "a")
	st, cs, err := f.tr.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingPaths != 1 || cs[0].PendingPaths != 1 || cs[1].PendingPaths != 2 {
		t.Errorf("after a again: status %d, default %d, c %d pending; want 1, 1, 2", st.PendingPaths, cs[0].PendingPaths, cs[1].PendingPaths)
	}
}

// RequireFullCopy (a mount whose check could not list what was removed
// around hsmfs) makes every consumer, the default one included, say full
// until its next bless; it survives a crash, and a query answered before
// it cannot be blessed, since that would end it without the copy.
func TestRequireFullCopy(t *testing.T) {
	f := newFixture(t, memStoreOpts{})
	if err := f.tr.AddConsumer("c"); err != nil {
		t.Fatal(err)
	}
	f.blessFull("c", f.queryFor("c").Query)
	f.mod(OpWrite, "a")
	before, beforeC := f.query().Query, f.queryFor("c").Query
	if err := f.tr.RequireFullCopy(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.tr.Bless(before); !errors.Is(err, ErrUnknownQuery) {
		t.Errorf("default: bless of a query answered before the requirement: %v", err)
	}
	if _, err := f.tr.BlessFor("c", beforeC); !errors.Is(err, ErrUnknownQuery) {
		t.Errorf("c: bless of a query answered before the requirement: %v", err)
	}
	f.crash(false)
	for _, name := range []string{"", "c"} {
		a := f.queryFor(name)
		if !a.Full {
			t.Errorf("consumer %q: answer after the requirement and a crash does not say full", name)
		}
		wantPaths(t, a, "a")
		if !f.queryFor(name).Full {
			t.Errorf("consumer %q: full not said until the bless", name)
		}
	}
	_, st, err := f.tr.Status()
	if err != nil || len(st) != 2 || !st[0].Full || !st[1].Full {
		t.Errorf("consumer list: %+v, %v; want both full", st, err)
	}
	for _, name := range []string{"", "c"} {
		q := f.queryFor(name).Query
		if _, err := f.tr.BlessFor(name, q); !errors.Is(err, ErrFullCopy) {
			t.Errorf("consumer %q: bless of a full answer without full: %v, want ErrFullCopy", name, err)
		}
		f.blessFull(name, q)
		if f.queryFor(name).Full {
			t.Errorf("consumer %q: full still said after its bless", name)
		}
	}
}
