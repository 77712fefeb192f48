package fs_test

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/checkpoint"
	hfs "github.com/hsmfs/hsmfs/fs"
	"github.com/hsmfs/hsmfs/internal/backing"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/journal"
)

// Unit tests of the FUSE layer in the style of go-fuse's own: the mount
// is served by this test process (fs.Mount over a real journal and a
// real BACKING), and the test acts through the mount point, so that a
// failure shows the request and its stack in one process. The e2e tests
// run the built binary; these need only /dev/fuse and root.

// failingStore is the real journal, whose Append fails while fail is set:
// a journal that refuses (a full or failing device).
type failingStore struct {
	checkpoint.Store
	fail atomic.Bool
}

func (s *failingStore) Append(recs []*checkpoint.Record) error {
	if s.fail.Load() {
		return syscall.EIO
	}
	return s.Store.Append(recs)
}

type mounted struct {
	mnt, back string
	store     *failingStore
	srv       *hfs.Server
}

// mount serves a new BACKING at a new mount point until the test ends.
func mount(t *testing.T) *mounted { return mountWith(t, nil) }

// mountWith is mount, with set changing the mount's Config first.
func mountWith(t *testing.T, set func(*hfs.Config)) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a FUSE mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	m := &mounted{mnt: t.TempDir(), back: t.TempDir()}
	b, err := backing.Open(m.back)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	j, err := journal.Open(t.TempDir(), m.back, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	m.store = &failingStore{Store: j}
	tr, err := checkpoint.New(m.store, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	cfg := hfs.Config{Backing: b, Tracker: tr, Mountpoint: m.mnt}
	if set != nil {
		set(&cfg)
	}
	srv, err := hfs.Mount(cfg)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	m.srv = srv
	t.Cleanup(func() {
		for try := 0; ; try++ {
			err := srv.Unmount()
			if err == nil {
				break
			}
			if try == 50 {
				t.Errorf("unmount %s: %v", m.mnt, err)
				unix.Unmount(m.mnt, unix.MNT_DETACH)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv.Wait()
	})
	return m
}

func (m *mounted) path(rel string) string { return filepath.Join(m.mnt, rel) }

// query runs one query through .hsm and returns its entries by path.
func (m *mounted) query(t *testing.T) map[string]hsmctl.Entry {
	t.Helper()
	c, err := hsmctl.Open(m.mnt, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Query()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got := make(map[string]hsmctl.Entry)
	for {
		e, err := a.NextEntry()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return got
		}
		got[e.Path] = *e
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMountRecordsEveryModification: each kind of modification made
// through the mount is in the next answer, under its op.
func TestMountRecordsEveryModification(t *testing.T) {
	m := mount(t)
	must(t, os.Mkdir(m.path("d"), 0o755))
	must(t, os.WriteFile(m.path("d/f"), []byte("x"), 0o644))
	must(t, os.WriteFile(m.path("old"), []byte("y"), 0o644))
	must(t, os.WriteFile(m.path("gone"), nil, 0o644))
	m.query(t)
	f, err := os.OpenFile(m.path("d/f"), os.O_RDWR, 0)
	must(t, err)
	must(t, f.Truncate(0)) // ftruncate: Node.Setattr with the file's handle
	must(t, f.Chmod(0o600))
	must(t, f.Close())
	must(t, os.Rename(m.path("old"), m.path("new")))
	must(t, os.Remove(m.path("gone")))
	must(t, os.Symlink("new", m.path("s")))
	must(t, os.Link(m.path("new"), m.path("l")))
	must(t, unix.Setxattr(m.path("new"), "user.k", []byte("v"), 0))
	must(t, os.Chtimes(m.path("d"), time.Unix(1, 0), time.Unix(1, 0)))
	got := m.query(t)
	for p, op := range map[string]string{"d/f": "truncate", "old": "rename", "new": "rename", "gone": "unlink",
		"s": "symlink", "l": "link", "d": "utimens"} {
		if !slices.Contains(got[p].Ops, op) {
			t.Errorf("%s: ops %q, want %s among them", p, got[p].Ops, op)
		}
	}
	if !slices.Contains(got["d/f"].Ops, "chmod") {
		t.Errorf("d/f: ops %q, want chmod (fchmod through the open file)", got["d/f"].Ops)
	}
	// new and l are one inode, which go-fuse names by one of its
	// paths; the answer lists both names (links.go).
	if !slices.Contains(got["new"].Ops, "setxattr") && !slices.Contains(got["l"].Ops, "setxattr") {
		t.Errorf("new and l: ops %q and %q, want setxattr in one of them", got["new"].Ops, got["l"].Ops)
	}
}

// TestMountFailsClosed: while the journal refuses, every modification
// fails with its errno and BACKING stays exactly as it was.
func TestMountFailsClosed(t *testing.T) {
	m := mount(t)
	must(t, os.Mkdir(m.path("d"), 0o755))
	must(t, os.WriteFile(m.path("d/f"), []byte("content"), 0o644))
	m.query(t)
	before := snapshot(t, m.back)
	m.store.fail.Store(true)
	for name, op := range map[string]func() error{
		"mkdir":    func() error { return os.Mkdir(m.path("d/new"), 0o755) },
		"create":   func() error { return os.WriteFile(m.path("d/g"), []byte("z"), 0o644) },
		"write":    func() error { return os.WriteFile(m.path("d/f"), []byte("other"), 0o644) },
		"truncate": func() error { return os.Truncate(m.path("d/f"), 0) },
		"rename":   func() error { return os.Rename(m.path("d/f"), m.path("d/h")) },
		"unlink":   func() error { return os.Remove(m.path("d/f")) },
		"rmdir":    func() error { return os.Remove(m.path("d")) },
		"chmod":    func() error { return os.Chmod(m.path("d/f"), 0o600) },
		"symlink":  func() error { return os.Symlink("f", m.path("d/s")) },
		"link":     func() error { return os.Link(m.path("d/f"), m.path("d/l")) },
		"setxattr": func() error { return unix.Setxattr(m.path("d/f"), "user.k", []byte("v"), 0) },
		"utimens":  func() error { return os.Chtimes(m.path("d/f"), time.Unix(1, 0), time.Unix(1, 0)) },
	} {
		err := op()
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s while the journal refuses: %v, want EIO", name, err)
		}
	}
	m.store.fail.Store(false)
	if after := snapshot(t, m.back); !maps.Equal(before, after) {
		t.Errorf("BACKING changed while the journal refused:\nbefore %v\nafter  %v", before, after)
	}
}

// snapshot is every path of dir with its type, size, mode and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	s := make(map[string]string)
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		s[rel] = fi.Mode().String() + " " + fi.ModTime().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s[rel] += " " + string(b)
		}
		return nil
	}))
	return s
}
