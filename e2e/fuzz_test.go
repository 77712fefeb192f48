package e2e

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fuzzer makes random modifications through the mount. It picks its
// targets by looking at BACKING (which is cheaper than the mount and
// holds the same tree) and records which paths it touched.
//
// Names keep their kind: files are f*, symlinks l*, directories d*, and
// symlinks only point at f* names, so that no path ever goes through a
// symlink to a directory (rsync would follow it).
type fuzzer struct {
	t            *testing.T
	rng          *rand.Rand
	mnt, backing string

	touched    map[string]bool // paths named by this round's modifications
	dirRenames []string        // new names (both, for exchanges) of renamed directories
	dirPairs   [][2]string     // (old, new) of renamed directories, both ways for exchanges
	// earlierPairs: dirPairs of the earlier rounds. The old entries
	// beneath their old names may be listed again (carried forward,
	// checkpoint/renames.go).
	earlierPairs [][2]string
	oldPaths     map[string]bool   // paths beneath the old names of renamed directories
	multiIno     map[string]uint64 // touched files that had several links: their inode
	log          []string
	trace        bool // log every modification as it is made (HSMFS_E2E_TRACE=1)
}

type fuzzOp struct {
	name   string
	weight int
	do     func(*fuzzer, *tree) bool // false: not applicable now
}

var fuzzOps = []fuzzOp{
	{"create", 14, (*fuzzer).create},
	{"write", 10, (*fuzzer).write},
	{"append", 6, (*fuzzer).appendTo},
	{"truncate", 5, (*fuzzer).truncate},
	{"mkdir", 6, (*fuzzer).mkdir},
	{"rmdir", 3, (*fuzzer).rmdir},
	{"rmtree", 1, (*fuzzer).rmtree},
	{"unlink", 6, (*fuzzer).unlink},
	{"rename", 7, (*fuzzer).rename},
	{"rename-dir", 3, (*fuzzer).renameDir},
	{"exchange", 2, (*fuzzer).exchange},
	{"symlink", 4, (*fuzzer).symlink},
	{"chmod", 5, (*fuzzer).chmod},
	{"link", 4, (*fuzzer).link},
	{"touch", 2, (*fuzzer).touch},
}

// tree is BACKING right now, as relative paths ("" is the root).
type tree struct {
	files, links, dirs []string
	all                map[string]bool
}

func (f *fuzzer) scan() *tree {
	tr := &tree{dirs: []string{""}, all: map[string]bool{}}
	err := filepath.WalkDir(f.backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.backing, p)
		if rel == "." {
			return nil
		}
		tr.all[rel] = true
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			tr.links = append(tr.links, rel)
		case d.IsDir():
			tr.dirs = append(tr.dirs, rel)
		default:
			tr.files = append(tr.files, rel)
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("scan BACKING: %v", err)
	}
	return tr
}

func (f *fuzzer) step() {
	tr := f.scan()
	total := 0
	for _, o := range fuzzOps {
		total += o.weight
	}
	for {
		n := f.rng.IntN(total)
		for _, o := range fuzzOps {
			if n -= o.weight; n < 0 {
				if o.do(f, tr) {
					return
				}
				break
			}
		}
	}
}

// pick picks one of s; a file with several links is noted (noteLinks).
func (f *fuzzer) pick(s []string) string {
	p := s[f.rng.IntN(len(s))]
	f.noteLinks(p)
	return p
}

func (f *fuzzer) abs(rel string) string { return filepath.Join(f.mnt, rel) }

var nameSuffixes = []string{"", "", "", "", " sp", "-é", "~", ".x"}

// newName returns a name of the kind (f, l, d) that dir does not hold.
func (f *fuzzer) newName(tr *tree, dir, kind string) string {
	for {
		name := kind + strconv.Itoa(f.rng.IntN(40)) + nameSuffixes[f.rng.IntN(len(nameSuffixes))]
		p := filepath.Join(dir, name)
		if !tr.all[p] {
			return p
		}
	}
}

func depth(p string) int {
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// did records a modification and the paths it named.
func (f *fuzzer) did(what string, err error, paths ...string) bool {
	f.t.Helper()
	f.log = append(f.log, fmt.Sprintf("%s %q", what, paths))
	if f.trace {
		f.t.Logf("op: %s %q", what, paths)
	}
	if err != nil {
		f.t.Fatalf("%s %q: %v\nmodifications so far this round:\n  %s", what, paths, err, strings.Join(f.log, "\n  "))
	}
	for _, p := range paths {
		f.touched[p] = true
	}
	return true
}

// noteLinks remembers the inode of the files p that have several links
// (looked at in BACKING before the modification).
func (f *fuzzer) noteLinks(ps ...string) {
	for _, p := range ps {
		var st syscall.Stat_t
		if syscall.Lstat(filepath.Join(f.backing, p), &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink > 1 {
			f.multiIno[p] = st.Ino
		}
	}
}

func (f *fuzzer) content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + f.rng.IntN(26))
	}
	return b
}

func (f *fuzzer) create(tr *tree) bool {
	p := f.newName(tr, f.pick(tr.dirs), "f")
	return f.did("create", os.WriteFile(f.abs(p), f.content(f.rng.IntN(8192)), 0o644), p)
}

func (f *fuzzer) write(tr *tree) bool {
	if len(tr.files) == 0 {
		return false
	}
	p := f.pick(tr.files)
	fh, err := os.OpenFile(f.abs(p), os.O_WRONLY, 0)
	if err == nil {
		st, _ := fh.Stat()
		_, err = fh.WriteAt(f.content(1+f.rng.IntN(4096)), f.rng.Int64N(st.Size()+1))
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
	}
	return f.did("write", err, p)
}

func (f *fuzzer) appendTo(tr *tree) bool {
	if len(tr.files) == 0 {
		return false
	}
	p := f.pick(tr.files)
	fh, err := os.OpenFile(f.abs(p), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = fh.Write(f.content(1 + f.rng.IntN(2048)))
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
	}
	return f.did("append", err, p)
}

func (f *fuzzer) truncate(tr *tree) bool {
	if len(tr.files) == 0 {
		return false
	}
	p := f.pick(tr.files)
	return f.did("truncate", os.Truncate(f.abs(p), f.rng.Int64N(10000)), p)
}

func (f *fuzzer) touch(tr *tree) bool {
	if len(tr.files) == 0 {
		return false
	}
	p := f.pick(tr.files)
	ts := time.Unix(1e9+f.rng.Int64N(1e9), f.rng.Int64N(1e9))
	return f.did("touch", os.Chtimes(f.abs(p), ts, ts), p)
}

func (f *fuzzer) mkdir(tr *tree) bool {
	parent := f.pick(tr.dirs)
	if depth(parent) >= 3 {
		return false
	}
	p := f.newName(tr, parent, "d")
	return f.did("mkdir", os.Mkdir(f.abs(p), 0o755), p)
}

func (f *fuzzer) children(tr *tree, dir string) []string {
	var out []string
	for p := range tr.all {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

func (f *fuzzer) rmdir(tr *tree) bool {
	var empty []string
	for _, d := range tr.dirs[1:] {
		if len(f.children(tr, d)) == 0 {
			empty = append(empty, d)
		}
	}
	if len(empty) == 0 {
		return false
	}
	p := f.pick(empty)
	return f.did("rmdir", os.Remove(f.abs(p)), p)
}

func (f *fuzzer) rmtree(tr *tree) bool {
	if len(tr.dirs) < 2 {
		return false
	}
	p := f.pick(tr.dirs[1:])
	paths := append(f.children(tr, p), p)
	return f.did("rm -r", os.RemoveAll(f.abs(p)), paths...)
}

func (f *fuzzer) unlink(tr *tree) bool {
	c := append(append([]string(nil), tr.files...), tr.links...)
	if len(c) == 0 {
		return false
	}
	p := f.pick(c)
	return f.did("unlink", os.Remove(f.abs(p)), p)
}

// rename moves a file or symlink, sometimes over an existing one of its kind.
func (f *fuzzer) rename(tr *tree) bool {
	c := append(append([]string(nil), tr.files...), tr.links...)
	if len(c) == 0 {
		return false
	}
	src := f.pick(c)
	kind := filepath.Base(src)[:1]
	var dst string
	var same []string
	for _, p := range c {
		if filepath.Base(p)[:1] == kind && p != src {
			same = append(same, p)
		}
	}
	if len(same) > 0 && f.rng.IntN(4) == 0 {
		dst = f.pick(same)
	} else {
		dst = f.newName(tr, f.pick(tr.dirs), kind)
	}
	return f.did("rename", os.Rename(f.abs(src), f.abs(dst)), src, dst)
}

func (f *fuzzer) subtreeDepth(tr *tree, dir string) int {
	d := 0
	for _, p := range f.children(tr, dir) {
		d = max(d, depth(p)-depth(dir))
	}
	return d
}

func (f *fuzzer) renameDir(tr *tree) bool {
	if len(tr.dirs) < 2 {
		return false
	}
	src := f.pick(tr.dirs[1:])
	parent := f.pick(tr.dirs)
	if parent == src || strings.HasPrefix(parent+"/", src+"/") || depth(parent)+1+f.subtreeDepth(tr, src) > 4 {
		return false
	}
	dst := f.newName(tr, parent, "d")
	f.dirRenames = append(f.dirRenames, dst)
	f.dirPairs = append(f.dirPairs, [2]string{src, dst})
	for _, q := range append(f.children(tr, src), src) {
		f.oldPaths[q] = true
	}
	return f.did("rename dir", os.Rename(f.abs(src), f.abs(dst)), src, dst)
}

// exchange swaps two files or two directories (neither inside the other).
func (f *fuzzer) exchange(tr *tree) bool {
	if f.rng.IntN(2) == 0 && len(tr.files) >= 2 {
		a, b := f.pick(tr.files), f.pick(tr.files)
		if a == b {
			return false
		}
		err := unix.Renameat2(unix.AT_FDCWD, f.abs(a), unix.AT_FDCWD, f.abs(b), unix.RENAME_EXCHANGE)
		return f.did("exchange", err, a, b)
	}
	if len(tr.dirs) < 3 {
		return false
	}
	a, b := f.pick(tr.dirs[1:]), f.pick(tr.dirs[1:])
	if a == b || strings.HasPrefix(a+"/", b+"/") || strings.HasPrefix(b+"/", a+"/") ||
		depth(a)+f.subtreeDepth(tr, b) > 4 || depth(b)+f.subtreeDepth(tr, a) > 4 {
		return false
	}
	f.dirRenames = append(f.dirRenames, a, b)
	f.dirPairs = append(f.dirPairs, [2]string{a, b}, [2]string{b, a})
	for _, q := range append(f.children(tr, a), f.children(tr, b)...) {
		f.oldPaths[q] = true
	}
	err := unix.Renameat2(unix.AT_FDCWD, f.abs(a), unix.AT_FDCWD, f.abs(b), unix.RENAME_EXCHANGE)
	return f.did("exchange dirs", err, a, b)
}

func (f *fuzzer) symlink(tr *tree) bool {
	dir := f.pick(tr.dirs)
	p := f.newName(tr, dir, "l")
	target := "f" + strconv.Itoa(f.rng.IntN(40))
	switch f.rng.IntN(3) {
	case 0:
		if len(tr.files) > 0 {
			target, _ = filepath.Rel(filepath.Join(f.backing, dir), filepath.Join(f.backing, f.pick(tr.files)))
		}
	case 1:
		target = "/nonexistent/" + target
	}
	return f.did("symlink", os.Symlink(target, f.abs(p)), p)
}

var fileModes = []os.FileMode{0o644, 0o600, 0o755, 0o640, 0o444, 0o400, 0o700}
var dirModes = []os.FileMode{0o755, 0o700, 0o750, 0o775, 0o711}

func (f *fuzzer) chmod(tr *tree) bool {
	if f.rng.IntN(3) == 0 && len(tr.dirs) > 1 {
		p := f.pick(tr.dirs[1:])
		return f.did("chmod", os.Chmod(f.abs(p), dirModes[f.rng.IntN(len(dirModes))]), p)
	}
	if len(tr.files) == 0 {
		return false
	}
	p := f.pick(tr.files)
	return f.did("chmod", os.Chmod(f.abs(p), fileModes[f.rng.IntN(len(fileModes))]), p)
}

func (f *fuzzer) link(tr *tree) bool {
	if len(tr.files) == 0 {
		return false
	}
	src := f.pick(tr.files)
	dst := f.newName(tr, f.pick(tr.dirs), "f")
	return f.did("link", os.Link(f.abs(src), f.abs(dst)), src, dst)
}

// checkAnswer checks the round's answer against what the round did: every
// touched path and everything beneath the new name of a renamed directory
// must be listed, and nothing else may be, but what was beneath its old
// name.
//
// A file with several links is the exception that the contract documents:
// A modification of a file with several links is listed under every
// name of the file: an extra path is excused when its inode is one that
// the round touched, and a touched path is never excused.
func (f *fuzzer) checkAnswer(round int, listed []string, a *Answer) bool {
	f.t.Helper()
	now := f.scan()
	required := map[string]bool{}
	for p := range f.touched {
		required[p] = true
	}
	for _, d := range f.dirRenames {
		for _, c := range f.children(now, d) {
			required[c] = true
		}
	}
	// A renamed directory whose new name was renamed again in the same
	// round may bring what is beneath its older names too.
	allowed := map[string]bool{}
	for p := range required {
		allowed[p] = true
	}
	for p := range f.touched {
		for _, c := range f.children(now, p) {
			allowed[c] = true
		}
	}
	// Everything that was beneath a renamed directory's old name has
	// gone from there: listing it is right too.
	for p := range f.oldPaths {
		allowed[p] = true
	}
	// hsmfs does not know what was beneath the old name of a renamed
	// directory, so it mirrors there what is (or was) beneath the new
	// one: paths that may never have existed, which rsync
	// --delete-missing-args ignores. Anything beneath either name is
	// accepted.
	beneathRenamed := func(p string) bool {
		for q := filepath.Dir(p); q != "." && q != "/"; q = filepath.Dir(q) {
			for _, pr := range f.dirPairs {
				if q == pr[0] || q == pr[1] {
					return true
				}
			}
			for _, pr := range f.earlierPairs {
				if q == pr[0] {
					return true
				}
			}
		}
		return false
	}
	// A path beneath a listed ancestor that is not a directory now needs
	// no line of its own: rsync deletes or replaces the ancestor whole
	// (a path touched beneath a directory that was renamed after).
	coveredAbove := func(p string) bool {
		for q := filepath.Dir(p); q != "." && q != "/"; q = filepath.Dir(q) {
			if slices.Contains(listed, q) && !slices.Contains(now.dirs, q) {
				return true
			}
		}
		return false
	}
	var missing, extra []string
	for p := range required {
		if !slices.Contains(listed, p) && !coveredAbove(p) {
			missing = append(missing, p)
		}
	}
	touchedInos := map[uint64]bool{}
	for _, ino := range f.multiIno {
		touchedInos[ino] = true
	}
	for _, p := range listed {
		e := a.Get(p)
		if !allowed[p] && !touchedInos[e.Ino] && !slices.ContainsFunc(e.Inos, func(i uint64) bool { return touchedInos[i] }) && !beneathRenamed(p) {
			extra = append(extra, p)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		f.t.Errorf("round %d: the answer misses %s and lists %s that the round did not touch",
			round, some(missing), some(extra))
		return false
	}
	return true
}

// explain logs the inode and link count of the files that differ, and
// the answer's entries for the same inode.
func (f *fuzzer) explain(ms, ds map[string]node, a *Answer) {
	for p, n := range ms {
		if n.Type != "file" || ds[p] == n {
			continue
		}
		var st syscall.Stat_t
		if syscall.Lstat(filepath.Join(f.backing, p), &st) != nil {
			continue
		}
		var same []string
		for _, e := range a.Entries {
			if e.Ino == st.Ino {
				same = append(same, fmt.Sprintf("%q (type %s, nlink %d, ops %q)", e.Path, e.Type, e.Nlink, e.Ops))
			}
		}
		f.t.Logf("%q: inode %d, %d links; the answer's entries for that inode: %s", p, st.Ino, st.Nlink, strings.Join(same, ", "))
	}
}
