package checkpoint

import (
	"slices"
	"testing"
)

// linkFixture: a file with names h1 and d/h2 that existed before the
// mount, an unrelated file, and one query and bless so that the
// answers below hold only what the test does.
func linkFixture(t *testing.T) *fixture {
	f := newFixture(t, memStoreOpts{async: true, flushOnSync: true})
	f.back.apply(bop{kind: "mkdir", path: "d", ino: 2})
	f.back.apply(bop{kind: "write", path: "h1", ino: 10})
	f.back.apply(bop{kind: "link", path: "d/h2", path2: "h1"})
	f.back.apply(bop{kind: "write", path: "other", ino: 11})
	f.bless(f.query().Query)
	return f
}

func (f *fixture) write(p string, ino uint64) {
	f.t.Helper()
	tok := f.begin(Intent{Op: OpWrite, Ino: ino, Path: p})
	f.back.apply(bop{kind: "write", path: p, ino: ino})
	tok.End()
}

// A write through one name lists every name, including one that the
// tracker never saw (made before the mount).
func TestLinkNamesOfAWrite(t *testing.T) {
	f := linkFixture(t)
	f.write("h1", 10)
	a := f.query()
	wantPaths(t, a, "d/h2", "h1")
	if e := entryOf(a, "d/h2"); e == nil || e.Ino != 10 || e.Nlink != 2 || !slices.Equal(e.Ops, []string{"write"}) {
		t.Errorf("d/h2: %+v, want ino 10, nlink 2, ops [write]", e)
	}
	// The added name stays listed until the bless (recorded as derived).
	wantPaths(t, f.query(), "d/h2", "h1")
	f.bless(0)
	wantPaths(t, f.query())
}

// Written through h1, then h1 removed: the change lives on at d/h2.
func TestLinkNamesAfterTheWrittenNameIsGone(t *testing.T) {
	f := linkFixture(t)
	f.write("h1", 10)
	tok := f.begin(Intent{Op: OpUnlink, Ino: 10, Path: "h1"})
	f.back.apply(bop{kind: "unlink", path: "h1"})
	tok.End()
	wantPaths(t, f.query(), "d/h2", "h1")
}

// A link made through the mount after the index was built is found from
// its record; one made around the tracker, from a new walk, because the
// names known fall short of the link count.
func TestLinkNamesMadeLater(t *testing.T) {
	f := linkFixture(t)
	f.write("other", 11) // builds the index (other has one link)
	f.bless(f.query().Query)
	tok := f.begin(Intent{Op: OpLink, Ino: 11, Path: "d/o2", Path2: "other"})
	f.back.apply(bop{kind: "link", path: "d/o2", path2: "other"})
	tok.End()
	f.bless(f.query().Query)
	f.back.apply(bop{kind: "link", path: "o3", path2: "other"}) // around the tracker
	f.write("other", 11)
	wantPaths(t, f.query(), "d/o2", "o3", "other")
}

// Names renamed away are not listed under their old names, and the
// renamed name is.
func TestLinkNamesFollowRenames(t *testing.T) {
	f := linkFixture(t)
	f.write("h1", 10)
	f.bless(f.query().Query)
	tok := f.begin(Intent{Op: OpRename, Flags: FlagDir, Path: "d", Path2: "e"})
	f.back.apply(bop{kind: "rename", path: "d", path2: "e"})
	tok.End()
	f.bless(f.query().Query)
	f.write("h1", 10)
	wantPaths(t, f.query(), "e/h2", "h1")
}

// Files with one link, or modifications of names only, add nothing and
// need no index.
func TestLinkNamesOnlyForModifiedInodes(t *testing.T) {
	f := linkFixture(t)
	f.write("other", 11)
	tok := f.begin(Intent{Op: OpRename, Ino: 10, Path: "h1", Path2: "h3"})
	f.back.apply(bop{kind: "rename", path: "h1", path2: "h3"})
	tok.End()
	wantPaths(t, f.query(), "h1", "h3", "other")
	if f.tr.links.built {
		t.Errorf("the hard-link index was built for an answer that needs none")
	}
}
