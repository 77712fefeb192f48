package outside

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// world is a real directory tree with its index taken.
type world struct {
	t    *testing.T
	dir  string
	fd   int
	idx  *Index
	logp string
}

func newWorld(t *testing.T, files ...string) *world {
	w := &world{t: t, dir: filepath.Join(t.TempDir(), "b")}
	for _, f := range files {
		w.write(f, "content of "+f)
	}
	os.MkdirAll(w.dir, 0o755)
	fd, err := unix.Open(w.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	w.fd = fd
	// The tree was made in this clock tick; an index taken in it would
	// count the tree as changed (ctime >= W errs on the safe side).
	time.Sleep(50 * time.Millisecond)
	res, err := Walk(fd, Now(), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != nil {
		t.Fatalf("a walk with no index listed %q", res.Changed)
	}
	w.idx = res.Index
	return w
}

func (w *world) p(rel string) string { return filepath.Join(w.dir, rel) }

func (w *world) write(rel, s string) {
	w.t.Helper()
	if err := os.MkdirAll(filepath.Dir(w.p(rel)), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(w.p(rel), []byte(s), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// replayed is the index as the next mount reads it: through its file,
// with the log of names replayed on it.
func (w *world) replayed() *Index {
	w.t.Helper()
	path := filepath.Join(w.t.TempDir(), "idx")
	must(w.t, w.idx.Save(path))
	x, err := Load(path)
	must(w.t, err)
	if w.logp != "" {
		must(w.t, ReadDeltas(w.logp, x))
	}
	return x
}

func (w *world) check() []string {
	w.t.Helper()
	res, err := Walk(w.fd, Now(), w.replayed(), false)
	if err != nil {
		w.t.Fatal(err)
	}
	slices.Sort(res.Changed)
	return slices.Compact(res.Changed)
}

// openLog starts the log of names for the world's index, as a mount does.
func (w *world) openLog() *Deltas {
	w.t.Helper()
	w.logp = filepath.Join(w.t.TempDir(), "log")
	d, err := OpenDeltas(w.logp, w.idx)
	must(w.t, err)
	return d
}

// ino is the inode number of rel ("." for the root).
func (w *world) ino(rel string) uint64 {
	w.t.Helper()
	var st unix.Stat_t
	must(w.t, unix.Stat(w.p(rel), &st))
	return st.Ino
}

// mv renames directory from to to, as if through the mount, and tells d
// what hsmfs tells it.
func (w *world) mv(d *Deltas, from, to string) {
	w.t.Helper()
	ino := w.ino(from)
	must(w.t, os.Rename(w.p(from), w.p(to)))
	d.Gone(w.ino(filepath.Dir(from)), filepath.Base(from))
	d.Add(w.ino(filepath.Dir(to)), filepath.Base(to), ino, true)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantListed(t *testing.T, got []string, want, notWant []string) {
	t.Helper()
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("%s not listed; listed %q", p, got)
		}
	}
	for _, p := range notWant {
		if slices.Contains(got, p) {
			t.Errorf("%s listed, but nothing changed it; listed %q", p, got)
		}
	}
}

var tree = []string{"a", "d/b", "d/e/c", "d/e/f/g", "x/y", "keep/k1", "keep/sub/k2"}

var untouched = []string{"keep", "keep/k1", "keep/sub", "keep/sub/k2"}

// Every kind of change straight in the tree, right after the index was
// taken (in the same clock tick, too).
func TestCheckFindsChanges(t *testing.T) {
	w := newWorld(t, tree...)
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	w.write("a", "new content")
	must(t, os.Chtimes(w.p("a"), old, old)) // mtime set back: ctime still says
	must(t, os.Chmod(w.p("x/y"), 0o600))
	must(t, os.Rename(w.p("d/e"), w.p("E"))) // moved away: old names listed
	must(t, os.Remove(w.p("d/b")))
	// A tree moved in from beside, with old times beneath.
	stage := filepath.Join(filepath.Dir(w.dir), "stage")
	must(t, os.MkdirAll(filepath.Join(stage, "t", "u"), 0o755))
	must(t, os.WriteFile(filepath.Join(stage, "t", "u", "f"), []byte("f"), 0o644))
	must(t, os.Chtimes(filepath.Join(stage, "t", "u", "f"), old, old))
	must(t, os.Rename(filepath.Join(stage, "t"), w.p("x/t")))
	got := w.check()
	wantListed(t, got, []string{"a", "x/y", "d/e", "d/e/c", "d/e/f", "d/e/f/g", "E", "E/c", "E/f", "E/f/g",
		"d/b", "x/t", "x/t/u", "x/t/u/f"}, untouched)
}

// A directory replaced by another of the same name: the old names
// beneath it are listed (rsync keeps them otherwise), and the new ones.
func TestCheckReplacedDirectory(t *testing.T) {
	w := newWorld(t, tree...)
	must(t, os.RemoveAll(w.p("d/e")))
	w.write("d/e/new", "n")
	got := w.check()
	wantListed(t, got, []string{"d/e", "d/e/c", "d/e/f", "d/e/f/g", "d/e/new"}, untouched)
}

// A directory made through the mount after the index was taken is known
// from the log of names; a name removed from it around hsmfs is listed.
func TestCheckUsesTheLogOfNames(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	w.write("n/m/z", "z") // as if made through the mount
	d.Add(w.ino("."), "n", w.ino("n"), true)
	d.Add(w.ino("n"), "m", w.ino("n/m"), true)
	d.Add(w.ino("n/m"), "z", w.ino("n/m/z"), false)
	must(t, d.Close())
	must(t, os.Remove(w.p("n/m/z"))) // around hsmfs
	got := w.check()
	wantListed(t, got, []string{"n/m/z"}, untouched)
}

func TestIndexDamageIsFound(t *testing.T) {
	w := newWorld(t, tree...)
	path := filepath.Join(t.TempDir(), "idx")
	must(t, w.idx.Save(path))
	data, err := os.ReadFile(path)
	must(t, err)
	data[len(data)/2] ^= 0x40
	must(t, os.WriteFile(path, data, 0o600))
	if _, err := Load(path); err == nil {
		t.Fatalf("a damaged index loaded")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none")); err != ErrNoIndex {
		t.Fatalf("a missing index: %v, want ErrNoIndex", err)
	}
}

// A log replays only on its own index: a crash between a new index and
// its new log leaves the old log, which must change nothing.
func TestLogOfAnotherIndex(t *testing.T) {
	w := newWorld(t, tree...)
	root := w.ino(".")
	p := filepath.Join(t.TempDir(), "log")
	d, err := OpenDeltas(p, w.idx)
	must(t, err)
	d.Gone(root, "a")
	must(t, d.Close())
	res, err := Walk(w.fd, Now(), nil, false) // the next index
	must(t, err)
	must(t, ReadDeltas(p, res.Index))
	if !slices.ContainsFunc(res.Index.Dirs[root], func(e Ent) bool { return e.Name == "a" }) {
		t.Errorf("the log of another index was replayed")
	}
	must(t, ReadDeltas(p, w.idx))
	if slices.ContainsFunc(w.idx.Dirs[root], func(e Ent) bool { return e.Name == "a" }) {
		t.Errorf("the log of the index was not replayed")
	}
	must(t, ReadDeltas(filepath.Join(t.TempDir(), "none"), w.idx)) // no log: nothing to replay
}

// The log stops at a torn record.
func TestDeltasTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	x := &Index{ID: 7, Dirs: map[uint64][]Ent{}}
	d, err := OpenDeltas(p, x)
	must(t, err)
	d.Add(1, "a", 2, false)
	d.Add(1, "b", 3, true)
	must(t, d.Close())
	data, _ := os.ReadFile(p)
	must(t, os.WriteFile(p, data[:len(data)-2], 0o600))
	must(t, ReadDeltas(p, x))
	if got := x.Dirs[1]; len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("read %v, want only a", got)
	}
}

// The index costs at most 64 bytes per entry.
func TestIndexSize(t *testing.T) {
	var files []string
	for i := 0; i < 2000; i++ {
		files = append(files, filepath.Join("dir"+string(rune('a'+i%20)), "some-file-name-"+string(rune('a'+i%26))+"-"+itoa(i)))
	}
	w := newWorld(t, files...)
	path := filepath.Join(t.TempDir(), "idx")
	must(t, w.idx.Save(path))
	st, err := os.Stat(path)
	must(t, err)
	per := float64(st.Size()) / float64(w.idx.Entries())
	t.Logf("%d entries, %d bytes, %.1f bytes per entry", w.idx.Entries(), st.Size(), per)
	if per > 64 {
		t.Errorf("%.1f bytes per entry, over 64", per)
	}
}

func itoa(i int) string {
	return string(rune('0'+i/1000%10)) + string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

// A directory that the index knows, moved around hsmfs beneath an empty
// one made through the mount after the index was taken (so the log of
// names knows the new one, but nothing in it): the moved directory's
// entries keep their names and old ctimes, so it is listed whole.
func TestCheckKnownDirectoryMovedIntoNewOne(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	must(t, os.Mkdir(w.p("n"), 0o755)) // as if made through the mount
	d.Add(w.ino("."), "n", w.ino("n"), true)
	must(t, d.Close())
	must(t, os.Rename(w.p("d/e"), w.p("n/e"))) // around hsmfs
	got := w.check()
	wantListed(t, got, []string{"n/e", "n/e/c", "n/e/f", "n/e/f/g", "d/e", "d/e/c", "d/e/f", "d/e/f/g"}, untouched)
}

// A directory renamed through the mount after the index was taken (and
// copied from an answer that was blessed: the copy holds it under its new
// name only), then moved back around hsmfs: its old name and inode are
// the index's again, but the copy has nothing beneath that name.
func TestCheckDirectoryMovedBackAroundHsmfs(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	w.mv(d, "d/e", "x/e")
	must(t, d.Close())
	must(t, os.Rename(w.p("x/e"), w.p("d/e"))) // around hsmfs
	got := w.check()
	wantListed(t, got, []string{"d/e", "d/e/c", "d/e/f", "d/e/f/g", "x/e"}, untouched)
}

// A directory renamed through the mount and back: the replayed log
// leaves it where it was, and a name removed from it around hsmfs is
// listed.
func TestCheckDirectoryMovedAndBackThroughTheMount(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	w.mv(d, "d/e", "x/e")
	w.mv(d, "x/e", "d/e")
	must(t, d.Close())
	must(t, os.Remove(w.p("d/e/c"))) // around hsmfs
	got := w.check()
	wantListed(t, got, []string{"d/e/c"}, untouched)
}

// A log torn between the two records of a rename (the crash came
// between them) leaves the directory under both names: each is listed
// with what it held.
func TestCheckTornLogRename(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	de := w.ino("d/e")
	must(t, os.Rename(w.p("d/e"), w.p("d/n"))) // as if through the mount
	d.Add(w.ino("d"), "n", de, true)           // its Gone was lost
	must(t, d.Close())
	must(t, os.Rename(w.p("d"), w.p("D"))) // around hsmfs
	got := w.check()
	wantListed(t, got, []string{"d", "d/e/c", "d/e/f/g", "d/n/c", "d/n/f/g", "D/n/f/g"}, untouched)
}

// The log replayed: a name made and removed through the mount, and a
// directory renamed, leave the index as the tree was at the end of the
// log; nothing that was there then and is unchanged now is listed.
func TestCheckReplaysTheLog(t *testing.T) {
	w := newWorld(t, tree...)
	d := w.openLog()
	d0, x, root := w.ino("d"), w.ino("x"), w.ino(".")
	w.mv(d, "d/e", "x/e")
	w.write("t", "t") // as if through the mount
	d.Add(root, "t", w.ino("t"), false)
	must(t, os.Remove(w.p("t")))
	d.Gone(root, "t")
	must(t, d.Close())
	idx := w.replayed()
	var names []string
	for _, e := range idx.Dirs[x] {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"e", "y"}) {
		t.Errorf("x holds %q after the replay, want e and y", names)
	}
	for _, e := range idx.Dirs[d0] {
		if e.Name == "e" {
			t.Errorf("d still holds e after the replay")
		}
	}
	for _, e := range idx.Dirs[root] {
		if e.Name == "t" {
			t.Errorf("the root still holds t after the replay")
		}
	}
}

// When the whole tree is listed (the clock went back, or BACKING moved to
// another filesystem), every path of the old index is listed too, so that
// what was removed is deleted from the copy.
func TestCheckEverythingListsOldPaths(t *testing.T) {
	w := newWorld(t, tree...)
	must(t, os.Remove(w.p("d/b")))
	must(t, os.RemoveAll(w.p("d/e")))
	res, err := Walk(w.fd, Now(), w.replayed(), true)
	must(t, err)
	wantListed(t, res.Changed, []string{".", "a", "d", "d/b", "d/e", "d/e/c", "d/e/f/g", "x/y", "keep/sub/k2"}, nil)
}
