package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// want is what a query must say about one path: its "ops" (any order;
// nil: not checked) and its type.
type want struct {
	ops []string
	typ string
}

// kindCase is one kind of modification from the contract's list.
type kindCase struct {
	name  string
	setup func(t *testing.T, d string) // before the bless
	op    func(t *testing.T, d string) // the modification under test
	want  map[string]want              // relative to the case's directory
	// also: paths that may be listed too. A renamed directory's old name
	// may bring what was (or is now) beneath it: rsync deletes those.
	also []string
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

func mkfile(names ...string) func(t *testing.T, d string) {
	return func(t *testing.T, d string) {
		for _, n := range names {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(d, n)), 0o755))
			writeFile(t, filepath.Join(d, n), "content of "+n+"\n")
		}
	}
}

func kindCases() []kindCase {
	return []kindCase{
		{name: "write", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				f, err := os.OpenFile(filepath.Join(d, "f"), os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte("X"), 3)
				must(t, err)
				must(t, f.Close())
				if got := readFile(t, filepath.Join(d, "f")); got != "conXent of f\n" {
					t.Fatalf("content after write: %q", got)
				}
			},
			want: map[string]want{"f": {[]string{"write"}, "file"}}},
		{name: "open-for-write-only", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				f, err := os.OpenFile(filepath.Join(d, "f"), os.O_RDWR, 0)
				must(t, err)
				must(t, f.Close())
			},
			want: map[string]want{"f": {[]string{"write"}, "file"}}},
		{name: "truncate", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, unix.Truncate(filepath.Join(d, "f"), 3))
			},
			want: map[string]want{"f": {[]string{"truncate"}, "file"}}},
		{name: "ftruncate", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				f, err := os.OpenFile(filepath.Join(d, "f"), os.O_WRONLY, 0)
				must(t, err)
				must(t, f.Truncate(100))
				must(t, f.Close())
			},
			want: map[string]want{"f": {[]string{"write", "truncate"}, "file"}}},
		{name: "open-O_TRUNC", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				f, err := os.OpenFile(filepath.Join(d, "f"), os.O_WRONLY|os.O_TRUNC, 0)
				must(t, err)
				must(t, f.Close())
				if got := readFile(t, filepath.Join(d, "f")); got != "" {
					t.Fatalf("content after O_TRUNC: %q", got)
				}
			},
			want: map[string]want{"f": {[]string{"write", "truncate"}, "file"}}},
		{name: "fallocate", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				f, err := os.OpenFile(filepath.Join(d, "f"), os.O_RDWR, 0)
				must(t, err)
				must(t, unix.Fallocate(int(f.Fd()), 0, 0, 1<<16))
				must(t, f.Close())
				if st, _ := os.Stat(filepath.Join(d, "f")); st == nil || st.Size() != 1<<16 {
					t.Fatalf("fallocate did not extend the file: %v", st)
				}
			},
			want: map[string]want{"f": {[]string{"write", "fallocate"}, "file"}}},
		{name: "copy_file_range", setup: mkfile("src", "dst"),
			op: func(t *testing.T, d string) {
				src, err := os.Open(filepath.Join(d, "src"))
				must(t, err)
				defer src.Close()
				dst, err := os.OpenFile(filepath.Join(d, "dst"), os.O_WRONLY, 0)
				must(t, err)
				n, err := unix.CopyFileRange(int(src.Fd()), nil, int(dst.Fd()), nil, 1<<20, 0)
				must(t, err)
				must(t, dst.Close())
				if got := readFile(t, filepath.Join(d, "dst")); n == 0 || got != "content of src\n" {
					t.Fatalf("copy_file_range copied %d bytes, dst now %q", n, got)
				}
			},
			want: map[string]want{"dst": {[]string{"write", "copy_file_range"}, "file"}}},
		{name: "create",
			op: func(t *testing.T, d string) {
				fd, err := unix.Open(filepath.Join(d, "new"), unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY, 0o640)
				must(t, err)
				unix.Close(fd)
			},
			want: map[string]want{"new": {[]string{"create"}, "file"}}},
		{name: "create-and-write",
			op: func(t *testing.T, d string) {
				writeFile(t, filepath.Join(d, "new"), "hello")
			},
			want: map[string]want{"new": {[]string{"create", "write", "truncate"}, "file"}}},
		{name: "mknod",
			op: func(t *testing.T, d string) {
				must(t, unix.Mknod(filepath.Join(d, "fifo"), unix.S_IFIFO|0o644, 0))
			},
			want: map[string]want{"fifo": {[]string{"mknod"}, "other"}}},
		{name: "mkdir",
			op: func(t *testing.T, d string) {
				must(t, os.Mkdir(filepath.Join(d, "sub"), 0o755))
			},
			want: map[string]want{"sub": {[]string{"mkdir"}, "dir"}}},
		{name: "symlink",
			op: func(t *testing.T, d string) {
				must(t, os.Symlink("../somewhere/else", filepath.Join(d, "sl")))
			},
			want: map[string]want{"sl": {[]string{"symlink"}, "symlink"}}},
		{name: "link", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, os.Link(filepath.Join(d, "f"), filepath.Join(d, "g")))
			},
			want: map[string]want{"f": {[]string{"link"}, "file"}, "g": {[]string{"link"}, "file"}}},
		{name: "unlink", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, os.Remove(filepath.Join(d, "f")))
			},
			want: map[string]want{"f": {[]string{"unlink"}, "gone"}}},
		{name: "unlink-symlink",
			setup: func(t *testing.T, d string) { must(t, os.Symlink("f", filepath.Join(d, "sl"))) },
			op: func(t *testing.T, d string) {
				must(t, os.Remove(filepath.Join(d, "sl")))
			},
			want: map[string]want{"sl": {[]string{"unlink"}, "gone"}}},
		{name: "rmdir",
			setup: func(t *testing.T, d string) { must(t, os.Mkdir(filepath.Join(d, "sub"), 0o755)) },
			op: func(t *testing.T, d string) {
				must(t, os.Remove(filepath.Join(d, "sub")))
			},
			want: map[string]want{"sub": {[]string{"rmdir"}, "gone"}}},
		{name: "rename", setup: mkfile("a"),
			op: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "a"), filepath.Join(d, "b")))
			},
			want: map[string]want{"a": {[]string{"rename"}, "gone"}, "b": {[]string{"rename"}, "file"}}},
		{name: "rename-over-existing", setup: mkfile("a", "b"),
			op: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "a"), filepath.Join(d, "b")))
			},
			want: map[string]want{"a": {[]string{"rename"}, "gone"}, "b": {[]string{"rename"}, "file"}}},
		{name: "rename-across-dirs", setup: mkfile("x/a", "y/keep"),
			op: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "x/a"), filepath.Join(d, "y/b")))
			},
			want: map[string]want{"x/a": {[]string{"rename"}, "gone"}, "y/b": {[]string{"rename"}, "file"}}},
		{name: "rename-NOREPLACE", setup: mkfile("a"),
			op: func(t *testing.T, d string) {
				must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "a"), unix.AT_FDCWD, filepath.Join(d, "b"), unix.RENAME_NOREPLACE))
			},
			want: map[string]want{"a": {[]string{"rename"}, "gone"}, "b": {[]string{"rename"}, "file"}}},
		{name: "rename-EXCHANGE", setup: mkfile("a", "b"),
			op: func(t *testing.T, d string) {
				must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "a"), unix.AT_FDCWD, filepath.Join(d, "b"), unix.RENAME_EXCHANGE))
				if got := readFile(t, filepath.Join(d, "a")); got != "content of b\n" {
					t.Fatalf("after the exchange a holds %q", got)
				}
			},
			want: map[string]want{"a": {[]string{"rename"}, "file"}, "b": {[]string{"rename"}, "file"}}},
		{name: "rename-dir", setup: mkfile("d/x", "d/sub/y", "other/z"),
			op: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "d"), filepath.Join(d, "e")))
			},
			want: map[string]want{
				"d":       {[]string{"rename"}, "gone"},
				"e":       {[]string{"rename"}, "dir"},
				"e/x":     {nil, "file"},
				"e/sub":   {nil, "dir"},
				"e/sub/y": {nil, "file"},
			},
			also: []string{"d/x", "d/sub", "d/sub/y"}},
		{name: "rename-dir-into-dir", setup: mkfile("d/x", "p/q/keep"),
			op: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "d"), filepath.Join(d, "p/q/d2")))
			},
			want: map[string]want{
				"d":        {[]string{"rename"}, "gone"},
				"p/q/d2":   {[]string{"rename"}, "dir"},
				"p/q/d2/x": {nil, "file"},
			},
			also: []string{"d/x"}},
		{name: "rename-EXCHANGE-dirs", setup: mkfile("d1/x", "d2/y", "d2/s/z"),
			op: func(t *testing.T, d string) {
				must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "d1"), unix.AT_FDCWD, filepath.Join(d, "d2"), unix.RENAME_EXCHANGE))
			},
			want: map[string]want{
				"d1":     {[]string{"rename"}, "dir"},
				"d1/y":   {nil, "file"},
				"d1/s":   {nil, "dir"},
				"d1/s/z": {nil, "file"},
				"d2":     {[]string{"rename"}, "dir"},
				"d2/x":   {nil, "file"},
			},
			also: []string{"d1/x", "d2/y", "d2/s", "d2/s/z"}},
		{name: "rename-EXCHANGE-file-and-dir", setup: mkfile("f", "dir/x"),
			op: func(t *testing.T, d string) {
				must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "f"), unix.AT_FDCWD, filepath.Join(d, "dir"), unix.RENAME_EXCHANGE))
			},
			want: map[string]want{
				"f":   {[]string{"rename"}, "dir"},
				"f/x": {nil, "file"},
				"dir": {[]string{"rename"}, "file"},
			},
			also: []string{"dir/x"}},
		{name: "chmod", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, os.Chmod(filepath.Join(d, "f"), 0o600))
			},
			want: map[string]want{"f": {[]string{"chmod"}, "file"}}},
		{name: "chmod-dir",
			setup: func(t *testing.T, d string) { must(t, os.Mkdir(filepath.Join(d, "sub"), 0o755)) },
			op: func(t *testing.T, d string) {
				must(t, os.Chmod(filepath.Join(d, "sub"), 0o700))
			},
			want: map[string]want{"sub": {[]string{"chmod"}, "dir"}}},
		{name: "chown", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, os.Lchown(filepath.Join(d, "f"), 65534, 65534))
			},
			want: map[string]want{"f": {[]string{"chown"}, "file"}}},
		{name: "chown-symlink",
			setup: func(t *testing.T, d string) { must(t, os.Symlink("nowhere", filepath.Join(d, "sl"))) },
			op: func(t *testing.T, d string) {
				must(t, os.Lchown(filepath.Join(d, "sl"), 65534, 65534))
			},
			want: map[string]want{"sl": {[]string{"chown"}, "symlink"}}},
		{name: "utimens", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				ts := []unix.Timespec{unix.NsecToTimespec(1e18), unix.NsecToTimespec(1e18 + 5)}
				must(t, unix.UtimesNano(filepath.Join(d, "f"), ts))
			},
			want: map[string]want{"f": {[]string{"utimens"}, "file"}}},
		{name: "setxattr", setup: mkfile("f"),
			op: func(t *testing.T, d string) {
				must(t, unix.Setxattr(filepath.Join(d, "f"), "user.e2e", []byte("value"), 0))
			},
			want: map[string]want{"f": {[]string{"setxattr"}, "file"}}},
		{name: "removexattr",
			setup: func(t *testing.T, d string) {
				mkfile("f")(t, d)
				must(t, unix.Setxattr(filepath.Join(d, "f"), "user.e2e", []byte("value"), 0))
			},
			op: func(t *testing.T, d string) {
				must(t, unix.Removexattr(filepath.Join(d, "f"), "user.e2e"))
			},
			want: map[string]want{"f": {[]string{"removexattr"}, "file"}}},
	}
}

// TestModificationKinds checks every kind of modification of the
// contract: after a bless, the modification alone, and the next query
// lists exactly its paths with its ops (plain and JSON answers alike).
func TestModificationKinds(t *testing.T) {
	m := mount(t)
	for _, c := range kindCases() {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(m.Mnt, c.name)
			must(t, os.Mkdir(d, 0o755))
			if c.setup != nil {
				c.setup(t, d)
			}
			reset(t, m.Mnt)
			before := snapshot(t, m.Backing, snapOpts{})

			c.op(t, d)

			a := query(t, m.Mnt)
			var wantPaths []string
			for p := range c.want {
				wantPaths = append(wantPaths, c.name+"/"+p)
			}
			var alsoPaths []string
			for _, p := range c.also {
				alsoPaths = append(alsoPaths, c.name+"/"+p)
			}
			pathsBetween(t, "query after "+c.name, a.Paths(), wantPaths, alsoPaths)
			for p, w := range c.want {
				e := a.Get(c.name + "/" + p)
				if e == nil {
					continue
				}
				if w.ops != nil && !slices.Equal(sorted(e.Ops), sorted(w.ops)) {
					t.Errorf("%s: ops %q, want %q", e.Path, e.Ops, w.ops)
				}
				if e.Type != w.typ {
					t.Errorf("%s: type %q, want %q", e.Path, e.Type, w.typ)
				}
				if e.Period < a.Blessed {
					t.Errorf("%s: period %d is below the last bless %d", e.Path, e.Period, a.Blessed)
				}
				if e.Inflight {
					t.Errorf("%s: inflight without any crash", e.Path)
				}
				t.Logf("%s: type %s ops %q", e.Path, e.Type, e.Ops)
			}
			// The same answer in the plain form.
			plainMatches(t, "after "+c.name, m.Mnt, plain(t, m.Mnt), a)

			// Everything the query did not list is unchanged in BACKING.
			after := snapshot(t, m.Backing, snapOpts{})
			for p := range c.want {
				delete(before, filepath.Join(c.name, p))
				delete(after, filepath.Join(c.name, p))
			}
			for _, p := range c.also {
				delete(before, filepath.Join(c.name, p))
				delete(after, filepath.Join(c.name, p))
			}
			delete(before, c.name) // its mtime changes with its entries
			delete(after, c.name)
			for _, p := range append(wantPaths, alsoPaths...) {
				// a renamed directory's old content
				for q := range before {
					if strings.HasPrefix(q, p+"/") {
						delete(before, q)
					}
				}
			}
			sameTree(t, "paths that the query did not list", before, after, "BACKING before", "BACKING after")
			bless(t, m.Mnt)
		})
	}
}

// pathsBetween fails the test unless got holds every path of required,
// and nothing that is in neither required nor optional.
func pathsBetween(t *testing.T, what string, got, required, optional []string) {
	t.Helper()
	missing := setDiff(required, got)
	extra := setDiff(setDiff(got, required), optional)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s: missing %s, unexpected %s (got %s, want %s, may also list %s)",
			what, some(missing), some(extra), some(got), some(required), some(optional))
	}
}

// TestOneSyncPerPeriod: repeated writes to one file in one period cost
// exactly one journal sync.
func TestOneSyncPerPeriod(t *testing.T) {
	m := mount(t)
	p := filepath.Join(m.Mnt, "f")
	writeFile(t, p, "start\n")
	reset(t, m.Mnt)

	before := num(t, status(t, m.Mnt), "journal_syncs")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	must(t, err)
	buf := bytes.Repeat([]byte("x"), 100)
	for i := 0; i < 100; i++ {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	must(t, f.Close())
	for i := 0; i < 50; i++ {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = f.Write(buf)
		must(t, err)
		must(t, f.Close())
	}
	after := num(t, status(t, m.Mnt), "journal_syncs")
	if after-before != 1 {
		t.Errorf("150 opens for writing and 150 writes of one file in one period took %d journal syncs, want 1", after-before)
	}
	a := query(t, m.Mnt)
	samePaths(t, "query", a.Paths(), []string{"f"})
	if st, err := os.Stat(filepath.Join(m.Backing, "f")); err != nil || st.Size() != 150*100 {
		t.Errorf("BACKING/f after the writes: %v %v, want size %d", st, err, 150*100)
	}
}

// hsmfs keeps the fds of recently used directories (internal/backing/dircache.go).
// After a directory moves or goes, an operation on a path must reach the
// directory now at that path, never the one that was there: every kind of
// operation runs once in a directory (caching its fd), then the directory
// is renamed, exchanged or removed and replaced, and the operation runs
// again under the same name.
func TestOperationsFollowDirectoryRenames(t *testing.T) {
	m := mount(t)
	mnt, back := m.Mnt, m.Backing
	at := func(rel string) string { return filepath.Join(mnt, rel) }
	ops := func(dir, tag string) {
		t.Helper()
		writeFile(t, at(dir+"/w"+tag), tag)
		must(t, os.Chmod(at(dir+"/w"+tag), 0o600))
		must(t, os.Symlink("w"+tag, at(dir+"/s"+tag)))
		must(t, os.Link(at(dir+"/w"+tag), at(dir+"/h"+tag)))
		must(t, os.Rename(at(dir+"/h"+tag), at(dir+"/r"+tag)))
		must(t, os.Mkdir(at(dir+"/d"+tag), 0o755))
		must(t, unix.Setxattr(at(dir+"/w"+tag), "user.tag", []byte(tag), 0))
	}
	want := func(dir string, names ...string) {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(back, dir))
		must(t, err)
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		slices.Sort(got)
		slices.Sort(names)
		if !slices.Equal(got, names) {
			t.Errorf("BACKING/%s holds %v, want %v", dir, got, names)
		}
	}
	all := func(tag string) []string {
		return []string{"w" + tag, "s" + tag, "r" + tag, "d" + tag}
	}
	must(t, os.Mkdir(at("a"), 0o755))
	must(t, os.Mkdir(at("b"), 0o755))
	ops("a", "1")
	ops("b", "2")
	// rename a away, b to a: "a" is now the directory that was b.
	must(t, os.Rename(at("a"), at("x")))
	must(t, os.Rename(at("b"), at("a")))
	ops("a", "3")
	want("x", all("1")...)
	want("a", append(all("2"), all("3")...)...)
	// Exchange a and x.
	must(t, unix.Renameat2(unix.AT_FDCWD, at("a"), unix.AT_FDCWD, at("x"), unix.RENAME_EXCHANGE))
	ops("a", "4")
	want("a", append(all("1"), all("4")...)...)
	// Remove x and make a new one.
	must(t, os.RemoveAll(at("x")))
	must(t, os.Mkdir(at("x"), 0o755))
	ops("x", "5")
	want("x", all("5")...)
	// A directory renamed into another one, and its parent renamed.
	must(t, os.Rename(at("x"), at("a/x")))
	must(t, os.Rename(at("a"), at("z")))
	ops("z/x", "6")
	want("z/x", append(all("5"), all("6")...)...)
	if _, err := os.Lstat(filepath.Join(back, "a")); err == nil {
		t.Error("BACKING/a exists after it was renamed to z")
	}
}
