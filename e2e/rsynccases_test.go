package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRsyncComplete checks the promise of the plain answer on single
// scenarios: after a bless and a full copy into DEST, one change, then
// rsync of the answer (as the contract gives it) makes DEST equal the
// mount again.
func TestRsyncComplete(t *testing.T) {
	rename := func(a, b string) func(t *testing.T, d string) {
		// not os.Rename, which refuses to replace a directory
		return func(t *testing.T, d string) { must(t, unix.Rename(filepath.Join(d, a), filepath.Join(d, b))) }
	}
	exchange := func(a, b string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) {
			must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, a), unix.AT_FDCWD, filepath.Join(d, b), unix.RENAME_EXCHANGE))
		}
	}
	mkdir := func(a string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) { must(t, os.Mkdir(filepath.Join(d, a), 0o755)) }
	}
	unlink := func(a string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, a))) }
	}
	rmAll := func(a string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) { must(t, os.RemoveAll(filepath.Join(d, a))) }
	}
	write := func(a, content string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) { writeFile(t, filepath.Join(d, a), content) }
	}
	symlink := func(target, a string) func(t *testing.T, d string) {
		return func(t *testing.T, d string) { must(t, os.Symlink(target, filepath.Join(d, a))) }
	}
	cases := []struct {
		name  string
		setup []string // files to create; a name ending in / is a directory
		ops   []func(t *testing.T, d string)
	}{
		{"write-and-create", []string{"a", "b"}, []func(*testing.T, string){write("a", "new"), write("c", "c")}},
		{"unlink", []string{"a", "b"}, []func(*testing.T, string){unlink("a")}},
		{"rm-r", []string{"d/a", "d/e/b"}, []func(*testing.T, string){rmAll("d")}},
		{"rename-dir", []string{"A/x", "A/s/y"}, []func(*testing.T, string){rename("A", "B")}},
		{"rename-dir-over-empty-dir", []string{"A/x", "B/"}, []func(*testing.T, string){rename("A", "B")}},
		{"file-replaced-by-dir", []string{"a"}, []func(*testing.T, string){unlink("a"), mkdir("a"), write("a/x", "x")}},
		{"dir-replaced-by-file", []string{"a/x"}, []func(*testing.T, string){rmAll("a"), write("a", "a")}},
		{"dir-replaced-by-symlink", []string{"a/x"}, []func(*testing.T, string){rmAll("a"), symlink("x", "a")}},
		{"exchange-files", []string{"a", "b"}, []func(*testing.T, string){exchange("a", "b")}},
		{"exchange-file-and-dir", []string{"f", "D/x"}, []func(*testing.T, string){exchange("f", "D")}},
		// The old name of a renamed directory names a directory again
		// when the query runs: DEST still holds the old children there.
		{"rename-dir-then-mkdir-old-name", []string{"A/x", "A/s/y"}, []func(*testing.T, string){rename("A", "B"), mkdir("A")}},
		{"rename-dir-then-other-dir-to-old-name", []string{"A/x", "C/z"}, []func(*testing.T, string){rename("A", "B"), rename("C", "A")}},
		{"exchange-dirs", []string{"A/x", "A/s/y", "B/z"}, []func(*testing.T, string){exchange("A", "B")}},
		{"rename-dir-twice", []string{"A/x", "C/z"}, []func(*testing.T, string){rename("A", "B"), rename("B", "C/B")}},
	}
	m := mount(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(m.Mnt, c.name)
			must(t, os.Mkdir(d, 0o755))
			for _, s := range c.setup {
				p := filepath.Join(d, s)
				must(t, os.MkdirAll(filepath.Dir(p), 0o755))
				if strings.HasSuffix(s, "/") {
					must(t, os.MkdirAll(p, 0o755))
				} else {
					writeFile(t, p, "content of "+s+"\n")
				}
			}
			reset(t, m.Mnt)
			dest := filepath.Join(t.TempDir(), "dest")
			if r := run(t, nil, "rsync", "-a", m.Mnt+"/", dest+"/"); r.code != 0 {
				t.Fatalf("rsync -a: %v", r)
			}
			for _, op := range c.ops {
				op(t, d)
			}
			waitClosed(t, m.Mnt)
			list, r := consume(t, m.Mnt, dest)
			rsyncOK(t, r, list)
			if !sameTree(t, c.name, snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
				t.Logf("the answer given to rsync:\n  %s", strings.Join(list, "\n  "))
			}
			bless(t, m.Mnt)
		})
	}
}

// consume runs one query through .hsm/changes and rsyncs its answer from
// the mount into dest, exactly as the contract gives the command.
func consume(t *testing.T, mnt, dest string) ([]string, result) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "changes"))
	must(t, err)
	list := parsePlain(t, data)
	return list, rsyncList(t, mnt, dest, list)
}

// rsyncList runs the contract's rsync command on list.
func rsyncList(t *testing.T, mnt, dest string, list []string) result {
	t.Helper()
	f := filepath.Join(t.TempDir(), "answer")
	data := ""
	if len(list) > 0 {
		data = strings.Join(list, "\n") + "\n"
	}
	must(t, os.WriteFile(f, []byte(data), 0o644))
	return run(t, nil, "rsync", "-a", "-I", "--files-from="+f, "--delete-missing-args", "--force", mnt+"/", dest+"/")
}

// rsyncOK fails the test unless rsync succeeded. Exit code 24 ("some
// files vanished") is accepted: rsync says it when a listed deleted path
// lies beneath another listed deleted directory (rm -r), whose implied
// parent directory it cannot find; it still deletes everything.
func rsyncOK(t *testing.T, r result, list []string) {
	t.Helper()
	switch r.code {
	case 0:
	case 24:
		t.Logf("rsync exit 24 (some files vanished), accepted: %s", strings.TrimSpace(r.stderr))
	default:
		t.Errorf("rsync of the answer failed: %v\nthe answer:\n  %s", r, strings.Join(list, "\n  "))
	}
}

// TestHardlinkInode: a file with several links is listed under every
// name it has, and changes.json gives its inode number and link count.
// Here the file is written through a, and then a and b, the only names
// that the mount has seen, are given to other files; c, its last name,
// is never looked up through the mount. The answer must still list c,
// whose content changed, so that rsync without -H copies it.
func TestHardlinkInode(t *testing.T) {
	b, mn, j := newDirs(t)
	for _, n := range []string{"a", "x", "y"} {
		must(t, os.WriteFile(filepath.Join(b, n), []byte("content of "+n+"\n"), 0o644))
	}
	must(t, os.Link(filepath.Join(b, "a"), filepath.Join(b, "b")))
	must(t, os.Link(filepath.Join(b, "a"), filepath.Join(b, "c")))
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(b, "c"), &st))
	ino := st.Ino
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j))
	for _, n := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(m.Mnt, n)); err != nil {
			t.Fatal(err)
		}
	}
	reset(t, m.Mnt)
	// DEST is a copy of BACKING, so that the mount never sees c.
	dest := filepath.Join(t.TempDir(), "dest")
	if r := run(t, nil, "rsync", "-a", b+"/", dest+"/"); r.code != 0 {
		t.Fatalf("rsync -a: %v", r)
	}

	appendTo(t, filepath.Join(m.Mnt, "a"), "appended through a\n")
	must(t, os.Rename(filepath.Join(m.Mnt, "x"), filepath.Join(m.Mnt, "a")))
	must(t, os.Rename(filepath.Join(m.Mnt, "y"), filepath.Join(m.Mnt, "b")))
	waitClosed(t, m.Mnt)

	a := query(t, m.Mnt)
	for _, e := range a.Entries {
		t.Logf("%s: type %s ino %d nlink %d inos %v ops %q", e.Path, e.Type, e.Ino, e.Nlink, e.Inos, e.Ops)
	}
	if e := a.Get("c"); e == nil || e.Ino != ino || e.Nlink != 1 {
		t.Errorf("c, the last name of the file written through a (inode %d), is not listed with its inode: %+v", ino, e)
	}
	list := a.Paths()
	rsyncOK(t, rsyncList(t, m.Mnt, dest, list), list)
	sameTree(t, "after the copy", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
}

// TestHardlinkNames keeps a mirror with the contract's rsync, which has
// no -H, through rounds of modifications of files with several links:
// links made before the mount and through it, names in other
// directories, a write and then the removal of the written name, a
// chmod, a directory rename that moves one name, and a write through an
// fd opened before the link was made.
func TestHardlinkNames(t *testing.T) {
	b, mn, j := newDirs(t)
	must(t, os.MkdirAll(filepath.Join(b, "d", "e"), 0o755))
	must(t, os.WriteFile(filepath.Join(b, "a"), []byte("a\n"), 0o644))
	must(t, os.Link(filepath.Join(b, "a"), filepath.Join(b, "d", "e", "a2")))
	must(t, os.WriteFile(filepath.Join(b, "x"), []byte("x\n"), 0o644))
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j))
	reset(t, m.Mnt)
	dest := filepath.Join(t.TempDir(), "dest")
	if r := run(t, nil, "rsync", "-a", m.Mnt+"/", dest+"/"); r.code != 0 {
		t.Fatalf("rsync -a: %v", r)
	}
	mp := func(p string) string { return filepath.Join(m.Mnt, p) }
	var held *os.File
	rounds := []struct {
		name string
		do   func()
		held bool // a file stays open for writing (waitClosed would wait for it)
	}{
		{"write-a-name-made-before-the-mount", func() { appendTo(t, mp("a"), "round 1\n") }, false},
		{"link-through-the-mount", func() {
			held = openAppend(t, mp("x"))
			must(t, os.Link(mp("x"), mp("d/x2")))
			must(t, os.Link(mp("x"), mp("d/e/x3")))
		}, true},
		{"write-the-other-name", func() { appendTo(t, mp("d/x2"), "round 3\n") }, true},
		{"write-through-an-fd-from-before-the-link", func() {
			_, err := held.WriteString("through the held fd\n")
			must(t, err)
			must(t, held.Close())
		}, false},
		{"write-then-remove-the-written-name", func() {
			appendTo(t, mp("d/e/a2"), "round 5\n")
			must(t, os.Remove(mp("d/e/a2")))
		}, false},
		{"chmod", func() { must(t, os.Chmod(mp("d/x2"), 0o600)) }, false},
		{"rename-a-directory-then-write", func() {
			must(t, os.Rename(mp("d/e"), mp("f")))
			appendTo(t, mp("x"), "round 7\n")
		}, false},
	}
	for _, r := range rounds {
		r.do()
		if !r.held {
			waitClosed(t, m.Mnt)
		}
		list, res := consume(t, m.Mnt, dest)
		rsyncOK(t, res, list)
		if !sameTree(t, r.name, snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
			t.Logf("the answer given to rsync:\n  %s", strings.Join(list, "\n  "))
		}
		bless(t, m.Mnt)
	}
}

func openAppend(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	return f
}

func appendTo(t *testing.T, p, s string) {
	t.Helper()
	f := openAppend(t, p)
	_, err := f.WriteString(s)
	must(t, err)
	must(t, f.Close())
}

// TestRootAttributes: a chmod and a utimes of the mount's root are
// listed (as ".", which rsync takes for the root) and reach the copy.
func TestRootAttributes(t *testing.T) {
	m := mount(t)
	reset(t, m.Mnt)
	dest := filepath.Join(t.TempDir(), "dest")
	if r := run(t, nil, "rsync", "-a", "--exclude=/.hsm", m.Mnt+"/", dest+"/"); r.code != 0 {
		t.Fatalf("rsync -a: %v", r)
	}
	must(t, os.Chmod(m.Mnt, 0o750))
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.Chtimes(m.Mnt, old, old))
	list, r := consume(t, m.Mnt, dest)
	rsyncOK(t, r, list)
	if !slices.Contains(list, ".") {
		t.Errorf("the answer %q does not list the root", list)
	}
	var sm, sd unix.Stat_t
	must(t, unix.Stat(m.Mnt, &sm))
	must(t, unix.Stat(dest, &sd))
	if sm.Mode != sd.Mode || sm.Mtim != sd.Mtim {
		t.Errorf("root: mount mode %o mtime %v, copy mode %o mtime %v", sm.Mode, sm.Mtim, sd.Mode, sd.Mtim)
	}
	bless(t, m.Mnt)
}
