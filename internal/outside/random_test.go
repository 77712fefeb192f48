package outside

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCheckRandom checks the check against real rsync in seeded random
// rounds. Each round is a run of hsmfs that ends in a crash: changes
// "through the mount" (made in the tree, and told to the log of names as
// hsmfs tells it), a copy of the tree into DEST as a consumer makes it
// and blesses it right before the crash, then changes around hsmfs, and
// the check. rsync with the contract's options and the check's list must
// make DEST equal to the tree. Sometimes the run ends cleanly instead:
// the index is taken again and the log emptied before the changes around
// hsmfs. Replay seed N with HSMFS_OUTSIDE_SEEDS=N,1.
func TestCheckRandom(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatal("rsync is needed (make deps installs it)")
	}
	first, seeds := uint64(1), uint64(150)
	if testing.Short() {
		seeds = 40
	}
	// HSMFS_OUTSIDE_SEEDS=FIRST,COUNT runs other seeds (a longer hunt).
	if v := os.Getenv("HSMFS_OUTSIDE_SEEDS"); v != "" {
		if _, err := fmt.Sscanf(v, "%d,%d", &first, &seeds); err != nil {
			t.Fatalf("HSMFS_OUTSIDE_SEEDS=%q: want FIRST,COUNT", v)
		}
	}
	for seed := first; seed < first+seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { t.Parallel(); checkRandom(t, seed) })
	}
}

func checkRandom(t *testing.T, seed uint64) {
	base := t.TempDir()
	r := &rworld{t: t, rng: rand.New(rand.NewPCG(seed, 11)), dir: filepath.Join(base, "b"), stage: filepath.Join(base, "stage")}
	must(t, os.Mkdir(r.dir, 0o755))
	for i := 0; i < 60; i++ {
		r.op(false)
	}
	fd, err := unix.Open(r.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	dest := filepath.Join(base, "dest")
	idx := r.index(fd)
	for round := 0; round < 3; round++ {
		logp := filepath.Join(base, fmt.Sprintf("log%d", round))
		r.log, err = OpenDeltas(logp, idx)
		must(t, err)
		for i := 0; i < 12; i++ {
			r.op(false)
		}
		must(t, r.log.Close())
		r.log = nil
		r.rsync("-a", "-I", "--delete", r.dir+"/", dest+"/") // blessed right before the end
		clean := r.rng.IntN(3) == 0
		if clean {
			// A clean unmount: the index of the mount with the log
			// replayed on it (as hsmfs writes it), the log emptied;
			// every other clean end walks the tree instead, as hsmfs
			// does when it cannot replay.
			if r.rng.IntN(2) == 0 {
				idx = r.index(fd)
			} else {
				idxp := filepath.Join(base, "idx")
				must(t, idx.Save(idxp))
				time.Sleep(10 * time.Millisecond)
				idx, err = Replayed(idxp, logp, Now())
				must(t, err)
				if walked := r.index(fd); !sameDirs(walked.Dirs, idx.Dirs) {
					t.Fatalf("round %d: the replayed index differs from a walk:\nreplayed %v\nwalked   %v\nops:\n  %s",
						round, idx.Dirs, walked.Dirs, strings.Join(r.ops, "\n  "))
				}
			}
			l, err := OpenDeltas(logp, idx)
			must(t, err)
			must(t, l.Close())
		}
		for i := 0; i < 12; i++ {
			r.op(true)
		}
		x := r.reload(idx)
		must(t, ReadDeltas(logp, x))
		time.Sleep(10 * time.Millisecond) // so that the next index does not count this round as new
		res, err := Walk(fd, Now(), x, false)
		must(t, err)
		list := filepath.Join(base, "list")
		must(t, os.WriteFile(list, []byte(strings.Join(r.unshadowed(res.Changed), "\x00")), 0o600))
		r.rsync("-a", "-I", "--from0", "--files-from="+list, "--delete-missing-args", "--force", r.dir+"/", dest+"/")
		if got, want := snap(t, dest), snap(t, r.dir); !equalSnaps(t, got, want) {
			t.Fatalf("round %d (clean end: %v): DEST differs from the tree after the check listed %q\nops:\n  %s",
				round, clean, res.Changed, strings.Join(r.ops, "\n  "))
		}
		idx = res.Index
	}
}

// sameDirs reports whether two indexes hold the same names, each with
// the same inode and kind, in every directory.
func sameDirs(a, b map[uint64][]Ent) bool {
	key := func(es []Ent) map[Ent]bool {
		m := make(map[Ent]bool, len(es))
		for _, e := range es {
			m[e] = true
		}
		return m
	}
	if len(a) != len(b) {
		return false
	}
	for dir, es := range a {
		other, ok := b[dir]
		if !ok || !maps.Equal(key(es), key(other)) {
			return false
		}
	}
	return true
}

// rworld is a real tree changed at random on a few names, so that names
// are vacated and taken again, and directories move back and forth.
type rworld struct {
	t     *testing.T
	rng   *rand.Rand
	dir   string
	stage string
	log   *Deltas // the run's log of names; nil around hsmfs
	ops   []string
	// moves are the renames made through the mount, which changes
	// around hsmfs like to undo (an administrator restores a name).
	moves [][2]string
}

var rnames = []string{"a", "b", "c", "f"}

// randPath is a name in a directory that exists (the root included), or
// beneath one that does not.
func (r *rworld) randPath() string {
	dirs := []string{"."}
	for _, p := range r.all() {
		if _, dir := r.stat(p); dir {
			dirs = append(dirs, p)
		}
	}
	p := filepath.Join(dirs[r.rng.IntN(len(dirs))], rnames[r.rng.IntN(len(rnames))])
	if r.rng.IntN(8) == 0 {
		if _, dir := r.stat(p); dir || !r.exists(p) {
			// Never through a symlink: the log would be told of a
			// name in another directory than the one that changed.
			p = filepath.Join(p, rnames[r.rng.IntN(len(rnames))])
		}
	}
	return p
}

func (r *rworld) exists(rel string) bool {
	var st unix.Stat_t
	return unix.Lstat(r.p(rel), &st) == nil
}

// existing picks a path that exists, or a random one.
func (r *rworld) existing() string {
	all := r.all()
	if len(all) == 0 {
		return r.randPath()
	}
	return all[r.rng.IntN(len(all))]
}

func (r *rworld) all() []string {
	var all []string
	filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != r.dir {
			all = append(all, p[len(r.dir)+1:])
		}
		return nil
	})
	return all
}

func (r *rworld) p(rel string) string { return filepath.Join(r.dir, rel) }

// op makes one random change; through the mount (outside false) it tells
// the log what hsmfs would.
func (r *rworld) op(outside bool) {
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if outside && len(r.moves) > 0 && r.rng.IntN(3) == 0 {
		m := r.moves[r.rng.IntN(len(r.moves))]
		r.rename(m[1], m[0], false)
		return
	}
	switch k := r.rng.IntN(15); {
	case k <= 2:
		p := r.randPath()
		if r.write(p, fmt.Sprint(r.rng.Uint32())) == nil {
			r.did("write %s", p)
			r.added(p)
		}
	case k <= 5:
		p := r.randPath()
		if os.Mkdir(r.p(p), 0o755) == nil {
			r.did("mkdir %s", p)
			r.added(p)
		}
	case k <= 9:
		src, dst := r.existing(), r.randPath()
		exch := r.rng.IntN(4) == 0
		r.rename(src, dst, exch)
	case k == 10:
		p := r.existing()
		// Through the mount, rm -rf removes every name on its own,
		// deepest first, and hsmfs logs each (the parent's inode read
		// before anything goes).
		type name struct {
			dir  uint64
			base string
		}
		var names []name
		filepath.WalkDir(r.p(p), func(q string, _ fs.DirEntry, err error) error {
			if err == nil {
				rel := q[len(r.dir)+1:]
				names = append(names, name{r.dirIno(rel), filepath.Base(rel)})
			}
			return nil
		})
		if os.RemoveAll(r.p(p)) == nil {
			r.did("rm -rf %s", p)
			for i := len(names) - 1; i >= 0 && r.log != nil; i-- {
				r.log.Gone(names[i].dir, names[i].base)
			}
		}
	case k == 11:
		src, dst := r.existing(), r.randPath()
		if os.Link(r.p(src), r.p(dst)) == nil {
			r.did("ln %s %s", src, dst)
			r.added(dst)
		}
	case k == 12:
		p := r.existing()
		if r.rng.IntN(4) == 0 {
			p = "." // the root's own mode
		}
		if os.Chmod(r.p(p), fs.FileMode(0o700|r.rng.IntN(0o100))) == nil {
			r.did("chmod %s", p)
		}
	case k == 13:
		p := r.randPath()
		if os.Symlink(rnames[r.rng.IntN(len(rnames))], r.p(p)) == nil {
			r.did("ln -s %s", p)
			r.added(p)
		}
	case outside: // a tree moved in from beside, with old times
		must(r.t, os.MkdirAll(filepath.Join(r.stage, "t", "u"), 0o755))
		must(r.t, os.WriteFile(filepath.Join(r.stage, "t", "u", "g"), []byte("moved in"), 0o644))
		must(r.t, os.Chtimes(filepath.Join(r.stage, "t", "u", "g"), old, old))
		dst := r.randPath()
		if os.Rename(filepath.Join(r.stage, "t"), r.p(dst)) == nil {
			r.did("move in %s", dst)
		} else {
			must(r.t, os.RemoveAll(r.stage))
		}
	default:
		p := r.existing()
		if os.Chtimes(r.p(p), old, old) == nil {
			r.did("touch -d 2001 %s", p)
		}
	}
}

// write writes a file; never through a symlink, which would make
// another name than the one the log is told.
func (r *rworld) write(rel, s string) error {
	f, err := os.OpenFile(r.p(rel), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}

func (r *rworld) rename(src, dst string, exch bool) {
	var flags uint
	if exch {
		flags = unix.RENAME_EXCHANGE
	}
	parent := r.dirIno(src)
	if unix.Renameat2(unix.AT_FDCWD, r.p(src), unix.AT_FDCWD, r.p(dst), flags) != nil {
		return
	}
	r.did("mv %s %s (exchange %v)", src, dst, exch)
	if r.log != nil {
		r.moves = append(r.moves, [2]string{src, dst})
	}
	if exch {
		r.added(src)
	} else if r.log != nil && !r.exists(src) { // two links of one file: rename(2) does nothing
		r.log.Gone(parent, filepath.Base(src))
	}
	r.added(dst)
}

func (r *rworld) did(format string, args ...any) {
	where := "around hsmfs"
	if r.log != nil {
		where = "through the mount"
	}
	r.ops = append(r.ops, fmt.Sprintf(format, args...)+", "+where)
}

// added tells the log, as hsmfs does, that rel's directory holds it.
func (r *rworld) added(rel string) {
	if r.log == nil {
		return
	}
	ino, dir := r.stat(rel)
	r.log.Add(r.dirIno(rel), filepath.Base(rel), ino, dir)
}

func (r *rworld) stat(rel string) (uint64, bool) {
	var st unix.Stat_t
	if unix.Lstat(r.p(rel), &st) != nil {
		return 0, false
	}
	return st.Ino, st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// dirIno is the inode of rel's directory (0 if there is none).
func (r *rworld) dirIno(rel string) uint64 {
	var st unix.Stat_t
	if unix.Lstat(filepath.Dir(r.p(rel)), &st) != nil {
		return 0
	}
	return st.Ino
}

// index takes an index of the tree as a mount does (W before the walk),
// after the clock has moved on from the changes before it.
func (r *rworld) index(fd int) *Index {
	time.Sleep(10 * time.Millisecond)
	res, err := Walk(fd, Now(), nil, false)
	must(r.t, err)
	return res.Index
}

// reload passes x through its file, as the next mount reads it.
func (r *rworld) reload(x *Index) *Index {
	path := filepath.Join(r.t.TempDir(), "idx")
	must(r.t, x.Save(path))
	y, err := Load(path)
	must(r.t, err)
	return y
}

// unshadowed drops the paths beneath a file or a symlink, as the query
// does with what the check records: one of their ancestors is listed too.
func (r *rworld) unshadowed(paths []string) []string {
	var out []string
next:
	for _, p := range paths {
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			var st unix.Stat_t
			if unix.Lstat(r.p(d), &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// rsync runs rsync; exit 24 (a listed path vanished) is success, as for
// the contract's consumers.
func (r *rworld) rsync(args ...string) {
	out, err := exec.Command("rsync", args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 24 {
		err = nil
	}
	if err != nil {
		r.t.Fatalf("rsync %q: %v\n%s", args, err, out)
	}
}

// snap describes every path beneath dir: type, permissions, content.
func snap(t *testing.T, dir string) map[string]string {
	m := map[string]string{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += " " + string(b)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + l
		}
		if p == dir {
			m["."] = s
		} else {
			m[p[len(dir)+1:]] = s
		}
		return nil
	}))
	return m
}

func equalSnaps(t *testing.T, got, want map[string]string) bool {
	ok := true
	for p, w := range want {
		if g, found := got[p]; !found {
			t.Errorf("%s: only in the tree (%s)", p, w)
			ok = false
		} else if g != w {
			t.Errorf("%s: DEST %s, tree %s", p, g, w)
			ok = false
		}
	}
	for p, g := range got {
		if _, found := want[p]; !found {
			t.Errorf("%s: only in DEST (%s)", p, g)
			ok = false
		}
	}
	return ok
}
