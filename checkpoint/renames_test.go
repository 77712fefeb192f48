package checkpoint

import (
	"fmt"
	"testing"
)

// Renames that chain into each other's names (p/s → q, then q/r → p, as
// a rename onto an empty directory allows) map old names one step per
// rename; answers must not grow from one query to the next (the old-name
// mapping once took its own derived paths as sources, and a crash test
// saw a daemon grow to 5 GB). A rename onto its own ancestor, which
// always fails, maps nothing.
func TestOldNamesDoNotGrowAcrossQueries(t *testing.T) {
	f := newFixture(t, memStoreOpts{async: true, flushOnSync: true})
	for i, p := range []string{"p", "p/s", "p/s/r", "c", "c/x"} {
		f.back.apply(bop{kind: "mkdir", path: p, ino: uint64(1 + i)})
	}
	for i := 0; i < 5; i++ {
		f.back.apply(bop{kind: "write", path: fmt.Sprintf("p/s/r/f%d", i), ino: uint64(10 + i)})
		f.back.apply(bop{kind: "write", path: fmt.Sprintf("c/x/f%d", i), ino: uint64(20 + i)})
		f.mod(OpWrite, fmt.Sprintf("c/x/f%d", i))
	}
	rename := func(from, to string) {
		t.Helper()
		tok := f.begin(Intent{Op: OpRename, Flags: FlagDir, Path: from, Path2: to})
		f.back.apply(bop{kind: "rename", path: from, path2: to})
		tok.End()
	}
	rename("p/s", "q")
	rename("q/r", "p/s2")
	// Fails in any filesystem (ENOTEMPTY), but its intent is recorded.
	f.begin(Intent{Op: OpRename, Flags: FlagDir, Path: "c/x", Path2: "c"}).End()
	var sizes []int
	for i := 0; i < 4; i++ {
		sizes = append(sizes, len(f.query().Entries))
	}
	for _, n := range sizes[1:] {
		if n != sizes[0] {
			t.Fatalf("answers grew from query to query: %v entries", sizes)
		}
	}
	a := f.query()
	for _, p := range []string{"p/s/r/f0", "q/r/f0", "p/s2/f0", "c/x/f0"} {
		if entryOf(a, p) == nil {
			t.Errorf("%s not listed", p)
		}
	}
	for _, e := range a.Entries {
		if len(e.Path) > len("c/x/x") && e.Path[:5] == "c/x/x" {
			t.Errorf("%s listed: a rename onto an ancestor was mapped", e.Path)
		}
	}
}
