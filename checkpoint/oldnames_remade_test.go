package checkpoint

import "testing"

// Old names made again between the query and the copy, each case a
// sequence that a review of the relevant edges (docs/design.md, "What a
// copy may hold beneath a name") found to leave a stale entry in DEST
// right after the copy (the first version of the rule failed each; the
// rule before it passed them). Each copy must be exact at once.

// copyRemade makes the names remade (old names made again after the
// query a), copies a, and checks DEST exact at once; then, if bless,
// blesses a and runs one more round.
func (w *oldNamesWorld) copyRemade(a *Answer, when string, bless bool, remade ...string) {
	w.t.Helper()
	for _, e := range a.Entries {
		w.t.Logf("listed %s %s", e.Path, e.Type)
	}
	for _, p := range remade {
		w.mkdir(p)
	}
	w.copyAll(a)
	w.checkDest(when)
	if bless {
		w.f.bless(a.Query)
		w.round()
	}
}

// TestOldNamesOnceOrder: an answer copied and not blessed makes the copy's
// moment unknown, and each directory is listed beneath the first name
// that reaches it only. The names beneath visited directories have their
// own once-map: they came first by depth and took the listing of the
// old name B/x.
func TestOldNamesOnceOrder(t *testing.T) {
	w := newOldNamesWorld(t)
	w.mkdir("A")
	w.mkdir("A/x")
	w.write("A/x/f")
	w.round()
	w.rename("A", "B")
	a1 := w.f.query()
	w.copyAll(a1) // not blessed
	w.checkDest("after copy 1")
	w.mkdir("A")
	w.rename("B/x", "B/y")
	w.rename("B/y", "Z")
	w.copyRemade(w.f.query(), "after copy 2", true, "B/x")
}

// TestOldNamesOnceOrder2: the same with the directory moved away and
// back.
func TestOldNamesOnceOrder2(t *testing.T) {
	w := newOldNamesWorld(t)
	w.mkdir("B")
	w.mkdir("B/x")
	w.write("B/x/f")
	w.round()
	w.write("u")
	a1 := w.f.query()
	w.copyAll(a1) // not blessed: cutoff unknown
	w.rename("B", "A")
	w.rename("A", "B")
	w.mkdir("A")
	w.rename("B/x", "Z")
	w.copyRemade(w.f.query(), "after copy 2", true, "B/x")
}

// TestOldNamesFileRenamedOver: a file renamed over a name of the moved
// directory after the bless (an editor's save) makes that name's only
// known child an irrelevant edge; the file that was there left no number
// in the edges, and the name must still be listed.
func TestOldNamesFileRenamedOver(t *testing.T) {
	w := newOldNamesWorld(t)
	w.mkdir("X")
	w.write("X/n")
	w.write("X/m")
	w.round() // blessed: DEST has X, X/n, X/m
	w.rename("X", "Y")
	w.write("tmp")
	w.do(Intent{Op: OpRename, Path: "tmp", Path2: "Y/n"}, bop{kind: "rename", path: "tmp", path2: "Y/n"})
	w.copyRemade(w.f.query(), "after the copy", true, "X")
}

// TestOldNamesFileThenDir: the file removed and a directory made under
// its name.
func TestOldNamesFileThenDir(t *testing.T) {
	w := newOldNamesWorld(t)
	w.mkdir("X")
	w.write("X/n")
	w.round()
	w.rename("X", "Y")
	w.unlink("Y/n")
	w.mkdir("Y/n")
	w.copyRemade(w.f.query(), "after the copy", true, "X")
}

// TestOldNamesFirstAnswerSeeded: before the first answer DEST may be a
// whole copy made after the mount, not the tree at its start.
func TestOldNamesFirstAnswerSeeded(t *testing.T) {
	w := newOldNamesWorld(t)
	w.mkdir("Z")
	w.write("Z/f")
	w.rename("Z", "C")
	for p, n := range w.f.back.copyTree() { // a whole copy, after the mount
		w.dest[p] = n
	}
	w.rename("C", "B")
	w.copyRemade(w.f.query(), "after the copy", false, "C")
}
