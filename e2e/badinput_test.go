package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// wantErrno fails the test unless err is one of the errnos.
func wantErrno(t *testing.T, what string, err error, errnos ...syscall.Errno) {
	t.Helper()
	for _, e := range errnos {
		if errors.Is(err, e) {
			return
		}
	}
	t.Errorf("%s: got error %v, want %v", what, err, errnos)
}

// state is what must not change when a command is refused.
type state struct{ current, lastQuery, lastBlessed uint64 }

func getState(t *testing.T, mnt string) state {
	t.Helper()
	st := status(t, mnt)
	return state{num(t, st, "current_period"), num(t, st, "last_query"), num(t, st, "last_blessed")}
}

func ctlText(t *testing.T, mnt string) string {
	t.Helper()
	return readFile(t, filepath.Join(mnt, ".hsm", "ctl"))
}

// TestCtlBadCommands: an unknown or malformed command fails the write
// with EINVAL, changes nothing, and reading ctl shows the reason.
func TestCtlBadCommands(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "f"), "x")
	waitClosed(t, m.Mnt)
	q1 := query(t, m.Mnt)
	before, backing := getState(t, m.Mnt), snapshot(t, m.Backing, snapOpts{dirTimes: true})
	if strings.Contains(ctlText(t, m.Mnt), "last error") {
		t.Errorf("ctl shows an error before any bad command:\n%s", ctlText(t, m.Mnt))
	}
	for _, cmd := range []string{"foo\n", "bless abc\n", "bless 1 2\n", "\n", "   \n", "bless\ncheckpoint\n",
		"checkpoint\nbless\n", "bless 0\n", "bless -1\n", "bless 1x\n", "checkpoint now\n", "BLESS\n", "foo"} {
		t.Run(fmt.Sprintf("%q", cmd), func(t *testing.T) {
			wantErrno(t, fmt.Sprintf("write %q to ctl", cmd), ctl(m.Mnt, cmd), syscall.EINVAL)
			text := ctlText(t, m.Mnt)
			if !strings.Contains(text, "last error: ") {
				t.Errorf("after %q, ctl does not show the last error:\n%s", cmd, text)
			}
			if got := getState(t, m.Mnt); got != before {
				t.Errorf("after %q the state changed from %+v to %+v", cmd, before, got)
			}
		})
	}
	sameTree(t, "BACKING", backing, snapshot(t, m.Backing, snapOpts{dirTimes: true}), "before", "after")
	q2 := query(t, m.Mnt)
	samePaths(t, "the answer after the bad commands", q2.Paths(), q1.Paths())
	if q2.Blessed != q1.Blessed {
		t.Errorf("blessed changed from %d to %d", q1.Blessed, q2.Blessed)
	}
	// The command line checks the ID itself: a bad command line.
	if r := hsm(t, "bless", "abc", m.Mnt); r.code != 2 {
		t.Errorf("hsmfs bless abc MNT: %v, want exit 2", r)
	}
	if got := getState(t, m.Mnt); got.lastBlessed != before.lastBlessed {
		t.Errorf("hsmfs bless abc blessed something: %+v", got)
	}
}

// TestBlessIDs: an ID that no query returned fails with EINVAL; an ID at
// or below the last bless succeeds and changes nothing.
func TestBlessIDs(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "f"), "x")
	waitClosed(t, m.Mnt)
	q := query(t, m.Mnt).Query
	before := getState(t, m.Mnt)
	for _, id := range []uint64{q + 1, q + 1000} {
		wantErrno(t, fmt.Sprintf("bless %d (latest query %d)", id, q), ctl(m.Mnt, fmt.Sprintf("bless %d\n", id)), syscall.EINVAL)
		if !strings.Contains(ctlText(t, m.Mnt), "last error: ") {
			t.Errorf("bless %d: ctl shows no error", id)
		}
		if got := getState(t, m.Mnt); got != before {
			t.Errorf("a refused bless %d changed the state from %+v to %+v", id, before, got)
		}
	}
	if r := hsm(t, "bless", fmt.Sprint(q+5), m.Mnt); r.code != 1 {
		t.Errorf("hsmfs bless %d MNT (no such query): %v, want exit 1", q+5, r)
	}
	must(t, ctl(m.Mnt, fmt.Sprintf("bless %d\n", q)))
	if got := getState(t, m.Mnt).lastBlessed; got != q {
		t.Fatalf("after bless %d, last_blessed is %d", q, got)
	}

	writeFile(t, filepath.Join(m.Mnt, "g"), "y")
	waitClosed(t, m.Mnt)
	a := query(t, m.Mnt)
	samePaths(t, "query after the bless", a.Paths(), []string{"g"})
	before = getState(t, m.Mnt)
	for _, id := range []uint64{q, q - 1, 1} {
		if id == 0 {
			continue
		}
		if err := ctl(m.Mnt, fmt.Sprintf("bless %d\n", id)); err != nil {
			t.Errorf("bless %d (at or below the last bless %d): %v, want success (a retry)", id, q, err)
		}
		if got := getState(t, m.Mnt); got != before {
			t.Errorf("bless %d (at or below the last bless) changed the state from %+v to %+v", id, before, got)
		}
	}
	if r := hsm(t, "bless", fmt.Sprint(q), m.Mnt); r.code != 0 {
		t.Errorf("hsmfs bless %d MNT (a retry): %v, want exit 0", q, r)
	}
	samePaths(t, "query after the retried blesses", query(t, m.Mnt).Paths(), []string{"g"})
}

// TestAllowOther: with -o allow_other, another user may use the mount and
// read status, but not read changes* nor write ctl (EACCES).
func TestAllowOther(t *testing.T) {
	m := mount(t, withArgs("-o", "allow_other"))
	writeFile(t, filepath.Join(m.Mnt, "f"), "x")
	waitClosed(t, m.Mnt)
	before := getState(t, m.Mnt)
	hsmDir := filepath.Join(m.Mnt, ".hsm")

	if r := run(t, nobody, "ls", "-l", m.Mnt); r.code != 0 || !strings.Contains(r.stdout, " f\n") {
		t.Errorf("nobody: ls MNT: %v", r)
	}
	for _, name := range []string{"changes", "changes.json"} {
		r := run(t, nobody, "cat", filepath.Join(hsmDir, name))
		if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("nobody: cat .hsm/%s: %v, want Permission denied", name, r)
		}
	}
	for _, cmd := range []string{"bless", "checkpoint"} {
		r := run(t, nobody, "sh", "-c", "echo "+cmd+" > "+filepath.Join(hsmDir, "ctl"))
		if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("nobody: echo %s > .hsm/ctl: %v, want Permission denied", cmd, r)
		}
	}
	if r := run(t, nobody, hsmfsBin, "changes", m.Mnt); r.code != 1 {
		t.Errorf("nobody: hsmfs changes MNT: %v, want exit 1", r)
	}
	r := run(t, nobody, "cat", filepath.Join(hsmDir, "status"))
	var st map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Errorf("nobody: cat .hsm/status: %v, want the status", r)
	}
	if got := getState(t, m.Mnt); got != before {
		t.Errorf("nobody's attempts changed the state from %+v to %+v", before, got)
	}
	// The owner still can.
	samePaths(t, "root's query", query(t, m.Mnt).Paths(), []string{"f"})
}

// TestControlDirReserved: nothing under .hsm can be created, removed,
// renamed, linked or chmod'ed (EPERM), nor .hsm itself; it is not listed,
// but reached by name. None of this runs a query or touches BACKING.
func TestControlDirReserved(t *testing.T) {
	m := mount(t)
	mnt, h := m.Mnt, filepath.Join(m.Mnt, ".hsm")
	writeFile(t, filepath.Join(mnt, "f"), "x")
	must(t, os.Mkdir(filepath.Join(mnt, "emptydir"), 0o755))
	waitClosed(t, mnt)
	before, backing := getState(t, mnt), snapshot(t, m.Backing, snapOpts{dirTimes: true})
	in := func(n string) string { return filepath.Join(h, n) }
	top := func(n string) string { return filepath.Join(mnt, n) }
	eperm := []syscall.Errno{syscall.EPERM}
	cases := []struct {
		name string
		do   func() error
		want []syscall.Errno
	}{
		{"create a file in .hsm", func() error { return os.WriteFile(in("new"), []byte("x"), 0o644) }, eperm},
		{"mkdir in .hsm", func() error { return os.Mkdir(in("d"), 0o755) }, eperm},
		{"mknod in .hsm", func() error { return unix.Mknod(in("fifo"), unix.S_IFIFO|0o644, 0) }, eperm},
		{"symlink in .hsm", func() error { return os.Symlink("x", in("s")) }, eperm},
		{"link into .hsm", func() error { return os.Link(top("f"), in("f")) }, eperm},
		{"link a control file out", func() error { return os.Link(in("ctl"), top("ctl")) }, eperm},
		{"rename within .hsm", func() error { return unix.Rename(in("ctl"), in("ctl2")) }, eperm},
		{"rename a control file out", func() error { return unix.Rename(in("status"), top("status")) }, eperm},
		{"rename into .hsm", func() error { return unix.Rename(top("f"), in("f")) }, eperm},
		{"rename over a control file", func() error { return unix.Rename(top("f"), in("changes")) }, eperm},
		{"unlink a control file", func() error { return unix.Unlink(in("ctl")) }, eperm},
		{"chmod a control file", func() error { return os.Chmod(in("ctl"), 0o666) }, eperm},
		{"chmod .hsm", func() error { return os.Chmod(h, 0o777) }, eperm},
		{"chown a control file", func() error { return os.Lchown(in("changes"), 65534, 65534) }, eperm},
		{"truncate changes", func() error { return unix.Truncate(in("changes"), 0) }, eperm},
		// Writing data into a read-only control file is not among the
		// contract's EPERM cases; a permission error is what matters.
		{"write changes", func() error {
			f, err := os.OpenFile(in("changes"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}, []syscall.Errno{syscall.EPERM, syscall.EACCES}},
		{"write status", func() error {
			f, err := os.OpenFile(in("status"), os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		}, []syscall.Errno{syscall.EPERM, syscall.EACCES}},
		{"rmdir .hsm", func() error { return unix.Rmdir(h) }, eperm},
		// unlink(2) of a directory: the kernel answers EISDIR itself.
		{"unlink .hsm", func() error { return unix.Unlink(h) }, []syscall.Errno{syscall.EPERM, syscall.EISDIR}},
		{"rename .hsm", func() error { return unix.Rename(h, top("hsm2")) }, eperm},
		{"rename a directory over .hsm", func() error { return unix.Rename(top("emptydir"), h) }, eperm},
		{"exchange .hsm", func() error {
			return unix.Renameat2(unix.AT_FDCWD, top("emptydir"), unix.AT_FDCWD, h, unix.RENAME_EXCHANGE)
		}, eperm},
		{"mkdir .hsm", func() error { return os.Mkdir(h, 0o755) }, []syscall.Errno{syscall.EEXIST, syscall.EPERM}},
		{"create .hsm", func() error {
			fd, err := unix.Open(h, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, []syscall.Errno{syscall.EEXIST, syscall.EPERM}},
	}
	for _, c := range cases {
		wantErrno(t, c.name, c.do(), c.want...)
	}
	sameTree(t, "BACKING", backing, snapshot(t, m.Backing, snapOpts{dirTimes: true}), "before", "after")
	ents, err := os.ReadDir(h)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	samePaths(t, "the entries of .hsm", names, []string{"changes", "changes.json", "consumers", "ctl", "status"})

	// Not listed, but reached by name.
	r := run(t, nil, "ls", "-a", mnt)
	if r.code != 0 || slices.Contains(strings.Fields(r.stdout), ".hsm") {
		t.Errorf("ls -a MNT: %v: .hsm must not be listed", r)
	}
	if fi, err := os.Stat(h); err != nil || !fi.IsDir() {
		t.Errorf("stat MNT/.hsm: %v %v, want a directory", fi, err)
	}
	// .hsm is reserved at the root only.
	must(t, os.Mkdir(top("emptydir/.hsm"), 0o755))
	must(t, os.Remove(top("emptydir/.hsm")))

	if got := getState(t, mnt); got.lastQuery != before.lastQuery || got.lastBlessed != before.lastBlessed {
		t.Errorf("the refused operations or a listing ran a query: state %+v, then %+v", before, got)
	}
}
