package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/internal/outside"
)

// outsideOps makes n random changes straight in BACKING (hsmfs is not
// running): the crash workload's operations, plus what only happens
// around a tracker: mtimes set back (touch -d), and directory trees
// moved in from beside BACKING, whose entries keep their old ctimes.
func outsideOps(t *testing.T, backing string, rng *rand.Rand, n int) {
	t.Helper()
	stage := filepath.Join(filepath.Dir(backing), "stage-"+filepath.Base(backing))
	for i := 0; i < n; i++ {
		switch rng.IntN(8) {
		case 0:
			p := filepath.Join(backing, randomPath(rng, true))
			old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
			os.Chtimes(p, old, old)
		case 1:
			must(t, os.MkdirAll(filepath.Join(stage, "t", "u"), 0o755))
			must(t, os.WriteFile(filepath.Join(stage, "t", "u", "f"), []byte(fmt.Sprint("moved in ", i)), 0o644))
			must(t, os.WriteFile(filepath.Join(stage, "t", "g"), []byte("g"), 0o644))
			old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
			os.Chtimes(filepath.Join(stage, "t", "u", "f"), old, old)
			dst := filepath.Join(backing, randomPath(rng, false))
			if os.Rename(filepath.Join(stage, "t"), dst) != nil {
				os.RemoveAll(filepath.Join(stage, "t"))
			}
		default:
			randomOpIn(backing, rng)
		}
	}
	os.RemoveAll(stage)
}

// TestOutsideChanges keeps a mirror with the contract's rsync while
// BACKING is changed around hsmfs between mounts: after a clean unmount
// and after a SIGKILL, then a mount, one rsync round, and the mirror must
// be exact. In place and not.
func TestOutsideChanges(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("inplace=%v", inPlace), func(t *testing.T) { testOutsideChanges(t, inPlace) })
	}
}

func testOutsideChanges(t *testing.T, inPlace bool) {
	b, mn, j := newDirs(t)
	if inPlace {
		mn = b
	}
	seed := crashSeed(t)
	t.Logf("seed %d (replay: HSMFS_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < 40; i++ {
		randomOpIn(b, rng)
	}
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	for round := 0; round < 6; round++ {
		for i := 0; i < 30; i++ {
			randomOpIn(mn, rng)
		}
		waitClosed(t, mn)
		if round%2 == 0 {
			copyAndBless(t, mn, dest)
		}
		how := "clean unmount"
		if round%3 == 1 {
			how = "SIGKILL"
			crash(t, m)
		} else {
			m.unmount(t)
		}
		outsideOps(t, b, rng, 25)
		m = mnt()
		if a := query(t, mn); a.OutsideCheck != "ran" {
			t.Errorf("round %d (%s): changes.json header outside_check %q, want ran", round, how, a.OutsideCheck)
		}
		list, r := consume(t, mn, dest)
		rsyncOK(t, r, list)
		if !sameTree(t, fmt.Sprintf("round %d, after a %s and changes around hsmfs", round, how),
			snapshot(t, mn, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
			t.Logf("the answer:\n  %s", strings.Join(list, "\n  "))
			t.FailNow()
		}
		bless(t, mn)
	}
}

// A directory renamed through the mount and copied (blessed or not),
// then, after a SIGKILL, moved back to its old name around hsmfs: the
// mirror holds it under the new name only, and the check must list what
// is beneath the old one (its entries keep their old ctimes, and the old
// name and inode are the index's again; the journal lists the old name
// but not what the move back put beneath it).
func TestOutsideDirectoryMovedBack(t *testing.T) {
	for _, blessed := range []bool{true, false} {
		t.Run(fmt.Sprintf("blessed=%v", blessed), func(t *testing.T) { testOutsideDirectoryMovedBack(t, blessed) })
	}
}

func testOutsideDirectoryMovedBack(t *testing.T, blessed bool) {
	b, mn, j := newDirs(t)
	writeFiles(t, b, "d/e/c", "d/e/f/g", "x/y")
	time.Sleep(50 * time.Millisecond) // the index must not count them as new
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	must(t, os.Rename(filepath.Join(mn, "d/e"), filepath.Join(mn, "x/e")))
	list, r := consume(t, mn, dest)
	rsyncOK(t, r, list)
	if blessed {
		bless(t, mn)
	}
	crash(t, m)
	must(t, os.Rename(filepath.Join(b, "x/e"), filepath.Join(b, "d/e")))
	mnt()
	copyMatches(t, mn, dest, "after the move back around hsmfs")
}

// The root's own mode, changed around hsmfs: the check lists "." (which
// rsync takes for the root itself), after a clean unmount and after a
// SIGKILL.
func TestOutsideRootMode(t *testing.T) {
	b, mn, j := newDirs(t)
	must(t, os.WriteFile(filepath.Join(b, "f"), []byte("f"), 0o644))
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	for i, mode := range []os.FileMode{0o750, 0o705} {
		if i == 0 {
			m.unmount(t)
		} else {
			crash(t, m)
		}
		must(t, os.Chmod(b, mode))
		m = mnt()
		list := copyAndBless(t, mn, dest)
		st, err := os.Stat(dest)
		must(t, err)
		if st.Mode().Perm() != mode {
			t.Fatalf("DEST's root has mode %v after the copy, the mount's is %v; the answer: %q", st.Mode().Perm(), mode, list)
		}
	}
}

// A new index without its log (a crash between the two, at an unmount
// or a mount): the log is empty then anyway, and the check still lists
// what changed around hsmfs, a removal included.
func TestOutsideIndexWithoutLog(t *testing.T) {
	b, mn, j := newDirs(t)
	must(t, os.WriteFile(filepath.Join(b, "f"), []byte("f"), 0o644))
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	must(t, os.WriteFile(filepath.Join(mn, "g"), []byte("g"), 0o644))
	copyAndBless(t, mn, dest)
	m.unmount(t)
	must(t, os.Remove(j+".tree.log"))
	must(t, os.Remove(filepath.Join(b, "f")))
	mnt()
	if a := query(t, mn); a.OutsideCheck != "ran" {
		t.Errorf("changes.json header outside_check %q, want ran", a.OutsideCheck)
	}
	if list := copyMatches(t, mn, dest, "after the removal around hsmfs"); !slices.Contains(list, "f") {
		t.Errorf("f, removed around hsmfs, not listed: %q", list)
	}
}

// A damaged tree index, or none at a later mount: the check cannot list
// what was removed around hsmfs, so every consumer, the default one and
// a named one, is told to copy the whole tree (full) until it blesses,
// and hsmfs sync does, which deletes the removed file from DEST.
func TestOutsideIndexLostMeansFull(t *testing.T) {
	for _, tc := range []struct {
		name, result string
		spoil        func(t *testing.T, idx string)
	}{
		{"damaged", "everything", func(t *testing.T, idx string) {
			data, err := os.ReadFile(idx)
			must(t, err)
			data[len(data)/2] ^= 0xff
			must(t, os.WriteFile(idx, data, 0o600))
		}},
		{"missing", "no index", func(t *testing.T, idx string) { must(t, os.Remove(idx)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, mn, j := newDirs(t)
			writeFiles(t, b, "d/f", "g")
			mnt := mounter(t, b, mn, j)
			m := mnt()
			if r := hsm(t, "consumer", "add", mn, "c"); r.code != 0 {
				t.Fatalf("consumer add: %v", r)
			}
			dests := map[string]string{"default": filepath.Join(t.TempDir(), "dest"), "c": filepath.Join(t.TempDir(), "destc")}
			syncAs := func(name string) string {
				t.Helper()
				r := hsm(t, "sync", "--consumer", name, mn, dests[name])
				if r.code != 0 {
					t.Fatalf("hsmfs sync --consumer %s: %v", name, r)
				}
				sameTree(t, "after hsmfs sync --consumer "+name, snapshot(t, mn, snapOpts{}), snapshot(t, dests[name], snapOpts{}), "MNT", "DEST")
				return summary(t, r)
			}
			syncAs("default")
			syncAs("c")
			m.unmount(t)
			tc.spoil(t, outside.IndexPath(j))
			must(t, os.Remove(filepath.Join(b, "g")))
			mnt()
			a := query(t, mn)
			if a.OutsideCheck != tc.result || !a.Full {
				t.Errorf("changes.json header: outside_check %q, full %v; want %q and full", a.OutsideCheck, a.Full, tc.result)
			}
			if a.byPath["."] == nil { // an empty answer would not reach hsmfs export's readers
				t.Errorf("the root is not listed: %+v", a.Entries)
			}
			if r := hsm(t, "changes", mn); r.code != 0 || !strings.Contains(r.stderr, "full: ") {
				t.Errorf("hsmfs changes does not say full on stderr: %v", r)
			}
			for _, name := range []string{"default", "c"} {
				if line := syncAs(name); !strings.Contains(line, "full copy") {
					t.Errorf("consumer %s: hsmfs sync made no full copy: %q", name, line)
				}
			}
			if a := query(t, mn); a.Full {
				t.Errorf("full still said after the full copy was blessed")
			}
		})
	}
}

// The clock behind the index (set back between two runs): the whole tree
// is listed, and every path of the index, so that a file removed around
// hsmfs is deleted from the copy too.
func TestOutsideClockBehind(t *testing.T) {
	b, mn, j := newDirs(t)
	must(t, os.MkdirAll(filepath.Join(b, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(b, "d", "f"), []byte("f"), 0o644))
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	m.unmount(t)
	idx, err := outside.Load(outside.IndexPath(j))
	must(t, err)
	idx.W = time.Now().Add(time.Hour).UnixNano() // as if the clock went back an hour
	must(t, idx.Save(outside.IndexPath(j)))
	must(t, os.Remove(filepath.Join(b, "d", "f")))
	mnt()
	if a := query(t, mn); a.OutsideCheck != "everything" {
		t.Errorf("changes.json header outside_check %q, want everything", a.OutsideCheck)
	}
	copyMatches(t, mn, dest, "after the removal, the clock behind")
}

// A filesystem mounted inside BACKING (a tmpfs here): the log of names
// numbers its inodes as go-fuse does (with the device mixed in), and so
// must the walk, or the log's directories are never found and a
// directory renamed through the mount and moved back around hsmfs after
// a crash loses its contents in the copy.
func TestOutsideNestedFilesystem(t *testing.T) {
	b, mn, j := newDirs(t)
	sub := filepath.Join(b, "sub")
	must(t, os.Mkdir(sub, 0o755))
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
	writeFiles(t, b, "sub/d/c", "sub/d/e/g")
	time.Sleep(50 * time.Millisecond) // the index must not count them as new
	mnt := mounter(t, b, mn, j)
	m := mnt()
	dest := mirrorAll(t, mn)
	must(t, os.Rename(filepath.Join(mn, "sub/d"), filepath.Join(mn, "sub/n")))
	copyAndBless(t, mn, dest)
	crash(t, m)
	must(t, os.Rename(filepath.Join(sub, "n"), filepath.Join(sub, "d")))
	mnt()
	copyMatches(t, mn, dest, "after the move back in the nested filesystem")
}

// mounter mounts BACKING b on mn with the journal j, each time it is
// called.
func mounter(t *testing.T, b, mn, j string) func() *hsmMount {
	return func() *hsmMount { return mount(t, withBacking(b), withMnt(mn), withJournal(j)) }
}

// copyAndBless runs one round of the contract's recipe into dest and
// blesses its query; it returns the answer.
func copyAndBless(t *testing.T, mn, dest string) []string {
	t.Helper()
	list, r := consume(t, mn, dest)
	rsyncOK(t, r, list)
	bless(t, mn)
	return list
}

// mirrorAll copies the whole mount into a new DEST with rsync and blesses
// where the tracker stands (reset): DEST then matches the mount at that
// bless, as a consumer's would.
func mirrorAll(t *testing.T, mn string) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "dest")
	if r := run(t, nil, "rsync", "-a", "--exclude=/.hsm", mn+"/", dest+"/"); r.code != 0 {
		t.Fatalf("rsync -a: %v", r)
	}
	reset(t, mn)
	return dest
}

// crash kills the daemon of m with SIGKILL and clears its dead mount, so
// that BACKING can be changed around hsmfs and mounted again.
func crash(t *testing.T, m *hsmMount) {
	t.Helper()
	killDaemon(t, m)
	forceUnmount(t, m.Mnt, 0)
}

// copyMatches runs one round of the contract's rsync recipe into dest
// (no bless) and fails unless dest then equals the mount; it returns the
// answer.
func copyMatches(t *testing.T, mn, dest, what string) []string {
	t.Helper()
	list, r := consume(t, mn, dest)
	rsyncOK(t, r, list)
	if !sameTree(t, what, snapshot(t, mn, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
		t.Logf("the answer:\n  %s", strings.Join(list, "\n  "))
	}
	return list
}

// writeFiles makes each file beneath dir, with its path as its content.
func writeFiles(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644))
	}
}
