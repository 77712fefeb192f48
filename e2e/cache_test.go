package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel keeps names, attributes, missing names and listings for a
// day (--cache-timeout): every change must show through the mount at
// once, never after the timeout. Each case is one entry of fs/cache.go's
// list, or one that the kernel sees for itself and that the long cache
// must not hide. Every check runs right after the change, far inside
// the timeout.

// lstatBoth stats p through the mount and in BACKING.
func lstatBoth(t *testing.T, m *hsmMount, rel string) (mnt, backing unix.Stat_t, errMnt, errBacking error) {
	t.Helper()
	errMnt = unix.Lstat(filepath.Join(m.Mnt, rel), &mnt)
	errBacking = unix.Lstat(filepath.Join(m.Backing, rel), &backing)
	return
}

// sameAttrs fails unless the mount shows what BACKING holds for rel:
// mode, owner, size, link count and the times.
func sameAttrs(t *testing.T, what string, m *hsmMount, rel string) {
	t.Helper()
	a, b, ea, eb := lstatBoth(t, m, rel)
	if ea != nil || eb != nil {
		t.Errorf("%s: lstat %s: mount %v, backing %v", what, rel, ea, eb)
		return
	}
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Size != b.Size || a.Nlink != b.Nlink ||
		a.Mtim != b.Mtim || a.Ctim != b.Ctim {
		t.Errorf("%s: %s through the mount: mode %o uid %d gid %d size %d nlink %d mtime %v ctime %v; BACKING: mode %o uid %d gid %d size %d nlink %d mtime %v ctime %v",
			what, rel, a.Mode, a.Uid, a.Gid, a.Size, a.Nlink, a.Mtim, a.Ctim, b.Mode, b.Uid, b.Gid, b.Size, b.Nlink, b.Mtim, b.Ctim)
	}
}

// TestCacheShowsChangesAtOnce: with the default (long) timeouts, a
// change made through one name, one process or one command shows at
// once through every other.
func TestCacheShowsChangesAtOnce(t *testing.T) {
	m := permMount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	must(t, os.Mkdir(p("d"), 0o755))
	writeFile(t, p("d/a"), "a")
	must(t, os.Link(p("d/a"), p("b")))

	// Warm the cache: every name, and some that do not exist yet.
	for _, n := range []string{"d", "d/a", "b"} {
		sameAttrs(t, "warm", m, n)
	}
	for _, n := range []string{"d/new", "d/x", ".hsm/consumers/late"} {
		if _, err := os.Lstat(p(n)); err == nil {
			t.Fatalf("%s exists before it was made", n)
		}
	}
	listing := func(dir string) []string {
		t.Helper()
		return listDir(t, p(dir))
	}
	samePaths(t, "d", listing("d"), []string{"a"})

	// Hard links: a change through one name shows through the other.
	must(t, os.Chmod(p("d/a"), 0o640))
	sameAttrs(t, "chmod of d/a, seen through b", m, "b")
	appendTo(t, p("b"), "more")
	waitClosed(t, m.Mnt)
	sameAttrs(t, "write through b, seen through d/a", m, "d/a")
	must(t, os.Link(p("b"), p("d/c")))
	sameAttrs(t, "a third link, seen through d/a", m, "d/a")

	// Missing names made, listings changed, names removed and moved.
	writeFile(t, p("d/new"), "new")
	sameAttrs(t, "a name that was missing, made", m, "d/new")
	samePaths(t, "d after the create", listing("d"), []string{"a", "c", "new"})
	must(t, os.Rename(p("d/new"), p("d/x")))
	if _, err := os.Lstat(p("d/new")); err == nil {
		t.Errorf("d/new still shows after its rename")
	}
	sameAttrs(t, "the rename's new name", m, "d/x")
	must(t, os.Remove(p("d/x")))
	if _, err := os.Lstat(p("d/x")); err == nil {
		t.Errorf("d/x still shows after its unlink")
	}
	samePaths(t, "d after the unlink", listing("d"), []string{"a", "c"})

	// chattr through an ioctl changes the ctime, which no reply carries.
	if out, err := exec.Command("chattr", "+d", p("d/a")).CombinedOutput(); err != nil {
		t.Logf("chattr +d: %v: %s (not checked)", err, out)
	} else {
		sameAttrs(t, "chattr +d", m, "d/a")
		exec.Command("chattr", "-d", p("d/a")).Run()
	}

	// A write by another user clears setuid and setgid (hsmfs clears
	// them, the kernel does not see it): stat shows it at once.
	writeFile(t, p("suid"), "x")
	must(t, os.Chmod(p("suid"), 0o6777))
	sameAttrs(t, "chmod 6777", m, "suid")
	if r := run(t, nobody, "sh", "-c", "echo more >> "+p("suid")); r.code != 0 {
		t.Fatalf("nobody: append: %v", r)
	}
	waitClosed(t, m.Mnt)
	sameAttrs(t, "a write by another user (setuid cleared)", m, "suid")
	if a, _, _, _ := lstatBoth(t, m, "suid"); a.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		t.Errorf("setuid or setgid still shows after the write: mode %o", a.Mode)
	}

	// An ACL changes the mode, which the kernel checks access by
	// (default_permissions): seen at once, by stat and by nobody.
	writeFile(t, p("acl"), "secret")
	must(t, os.Chmod(p("acl"), 0o644))
	sameAttrs(t, "chmod 644", m, "acl")
	if r := run(t, nil, "setfacl", "-m", "o::---", p("acl")); r.code != 0 {
		t.Fatalf("setfacl: %v", r)
	}
	// The kernel's own checks and a statx for the mode alone first: a
	// full stat asks for the ctime too, which setxattr marks stale.
	if r := run(t, nobody, "cat", p("acl")); r.code == 0 {
		t.Errorf("nobody read a file whose ACL took others' read away: %v", r)
	}
	var sx unix.Statx_t
	must(t, unix.Statx(unix.AT_FDCWD, p("acl"), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MODE, &sx))
	if sx.Mode&0o777 != 0o640 {
		t.Errorf("statx for the mode after setfacl o::---: %o, want 640", sx.Mode&0o777)
	}
	sameAttrs(t, "setfacl o::---", m, "acl")

	// Writes through a shared mapping reach BACKING without a request
	// (passthrough): the close shows their times.
	writeFile(t, p("mapped"), strings.Repeat("x", 4096))
	waitClosed(t, m.Mnt)
	sameAttrs(t, "before the mapping", m, "mapped")
	time.Sleep(1100 * time.Millisecond) // a new second for the mtime
	mf, err := os.OpenFile(p("mapped"), os.O_RDWR, 0)
	must(t, err)
	mem, err := unix.Mmap(int(mf.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	sameAttrs(t, "mapped", m, "mapped") // the kernel now holds its attributes
	copy(mem, "written through the mapping")
	must(t, unix.Msync(mem, unix.MS_SYNC))
	must(t, unix.Munmap(mem))
	must(t, mf.Close())
	waitClosed(t, m.Mnt)
	sameAttrs(t, "written through a shared mapping", m, "mapped")

	// Named consumers come and go with commands written to ctl.
	if r := hsm(t, "consumer", "add", m.Mnt, "late"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	if _, err := os.Stat(p(".hsm/consumers/late/ctl")); err != nil {
		t.Errorf("a consumer whose name was looked up before it was added: %v", err)
	}
	if r := hsm(t, "consumer", "rm", m.Mnt, "late"); r.code != 0 {
		t.Fatalf("consumer rm: %v", r)
	}
	if _, err := os.Stat(p(".hsm/consumers/late")); err == nil {
		t.Errorf("a removed consumer still shows")
	}
}

// TestCacheTimeoutOption: -o cache_timeout=D (and --cache-timeout) sets
// how long the kernel keeps what it looked up; with a short one, a
// change made around the mount shows once it is past, with the default
// it does not (changes around a mount that is not in place are not
// tracked, and the kernel's copy stands).
func TestCacheTimeoutOption(t *testing.T) {
	short := mount(t, withArgs("-o", "cache_timeout=200ms"))
	long := mount(t)
	for _, m := range []*hsmMount{short, long} {
		writeFile(t, filepath.Join(m.Mnt, "f"), "f")
		waitClosed(t, m.Mnt)
		sameAttrs(t, "made through the mount", m, "f")
		must(t, os.Chmod(filepath.Join(m.Backing, "f"), 0o600)) // around the mount
	}
	time.Sleep(time.Second)
	sameAttrs(t, "-o cache_timeout=200ms, a second after a chmod around the mount", short, "f")
	if a, b, _, _ := lstatBoth(t, long, "f"); a.Mode == b.Mode {
		t.Logf("the default cache showed a change made around the mount after a second (mode %o): the kernel dropped it early", a.Mode)
	}
	for _, bad := range []string{"cache_timeout=soon", "cache_timeout=-1s"} {
		b, mn, j := newDirs(t)
		if r := hsm(t, "mount", "--journal", j, "-o", bad, b, mn); r.code != 2 {
			t.Errorf("mount -o %s: %v, want exit 2", bad, r)
		}
	}
	if r := hsm(t, "mount", "--help"); !strings.Contains(r.stdout, "--cache-timeout") {
		t.Errorf("mount --help does not name --cache-timeout")
	}
}

// TestCacheInPlaceHeld: an in-place mount over a directory that a
// process holds something beneath from before keeps names for one
// second only: what that process changes around the mount shows soon,
// not after a day (it is still not tracked; --strict refuses instead).
func TestCacheInPlaceHeld(t *testing.T) {
	b, _, j := newDirs(t)
	held, err := os.Open(b)
	must(t, err)
	defer held.Close()
	m := mount(t, withBacking(b), withMnt(b), withJournal(j))
	if !strings.Contains(readLog(m), "one second only") {
		t.Errorf("the daemon's log does not say the cache was kept short")
	}
	if _, err := os.Lstat(filepath.Join(b, "late")); err == nil {
		t.Fatalf("late exists before it was made")
	}
	fd, err := unix.Openat(int(held.Fd()), "late", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644) // around the mount
	must(t, err)
	unix.Close(fd)
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Lstat(filepath.Join(b, "late")); err != nil {
		t.Errorf("a name made around the in-place mount by a holder does not show after 1.5 s: %v", err)
	}
}

// TestCacheAfterRemount: what changed while hsmfs was not mounted (the
// check at mount finds it) shows at once through the new mount: the
// kernel's cache went with the old mount, and the check runs before the
// new one goes live.
func TestCacheAfterRemount(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "f"), "f")
	waitClosed(t, m.Mnt)
	sameAttrs(t, "before the unmount", m, "f")
	m.unmount(t)
	must(t, os.Chmod(filepath.Join(m.Backing, "f"), 0o600))
	writeFile(t, filepath.Join(m.Backing, "g"), "g")
	m2 := mount(t, withBacking(m.Backing), withMnt(m.Mnt), withJournal(m.Journal))
	sameAttrs(t, "changed while unmounted", m2, "f")
	sameAttrs(t, "made while unmounted", m2, "g")
	if a := query(t, m2.Mnt); !hasAll(a.Paths(), []string{"f", "g"}) {
		t.Errorf("the check at mount did not list f and g: %q", a.Paths())
	}
}

// TestNodeBudgetOption: -o max_nodes=N (and --max-nodes) bounds the
// nodes that the kernel and the daemon hold; with 0 they are only
// counted. Either way every name made is in the answer and reads as
// BACKING holds it. Bad values are refused before anything is mounted.
func TestNodeBudgetOption(t *testing.T) {
	const budget, names = 300, 2000
	small := mount(t, withArgs("-o", fmt.Sprintf("max_nodes=%d", budget)))
	none := mount(t, withArgs("--max-nodes", "0"))
	for _, m := range []*hsmMount{small, none} {
		must(t, os.Mkdir(filepath.Join(m.Mnt, "d"), 0o755))
		for i := 0; i < names; i++ {
			must(t, os.Symlink("t", filepath.Join(m.Mnt, "d", fmt.Sprintf("s%04d", i))))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for num(t, status(t, small.Mnt), "nodes") > budget {
		if time.Now().After(deadline) {
			t.Fatalf("-o max_nodes=%d: still %d nodes held 10 s after %d names were made", budget, num(t, status(t, small.Mnt), "nodes"), names)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, stNone := status(t, small.Mnt), status(t, none.Mnt)
	t.Logf("max_nodes=%d: %d nodes held, %d pruned; no budget: %d held, %d pruned", budget,
		num(t, st, "nodes"), num(t, st, "nodes_pruned"), num(t, stNone, "nodes"), num(t, stNone, "nodes_pruned"))
	if n := num(t, st, "nodes"); n < budget/2 {
		t.Errorf("-o max_nodes=%d: %d nodes held: the newest should stay", budget, n)
	}
	if num(t, st, "nodes_pruned") == 0 || num(t, stNone, "nodes_pruned") != 0 || num(t, stNone, "nodes") < names {
		t.Errorf("nodes pruned %d with the budget, %d without it (want some, and none); %d held without it, want at least %d",
			num(t, st, "nodes_pruned"), num(t, stNone, "nodes_pruned"), num(t, stNone, "nodes"), names)
	}
	if r := hsm(t, "status", small.Mnt); !strings.Contains(r.stdout, "nodes:") {
		t.Errorf("hsmfs status does not show the nodes: %v", r)
	}
	for _, m := range []*hsmMount{small, none} {
		r := hsm(t, "changes", m.Mnt)
		if r.code != 0 {
			t.Fatalf("hsmfs changes: %v", r)
		}
		if got := len(parsePlain(t, []byte(r.stdout))); got < names+1 {
			t.Errorf("%s: the answer lists %d paths, want the %d names and their directory", m.Mnt, got, names)
		}
		ents, err := os.ReadDir(filepath.Join(m.Mnt, "d"))
		must(t, err)
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(m.Mnt, "d", e.Name())); err != nil || l != "t" {
				t.Fatalf("%s/d/%s: %q, %v", m.Mnt, e.Name(), l, err)
			}
		}
	}
	for _, bad := range [][]string{{"-o", "max_nodes=many"}, {"-o", "max_nodes=-1"}, {"--max-nodes", "-5"}} {
		b, mn, j := newDirs(t)
		if r := hsm(t, append(append([]string{"mount", "--journal", j}, bad...), b, mn)...); r.code != 2 {
			t.Errorf("mount %s: %v, want exit 2", strings.Join(bad, " "), r)
		}
	}
	if r := hsm(t, "mount", "--help"); !strings.Contains(r.stdout, "--max-nodes") {
		t.Errorf("mount --help does not name --max-nodes")
	}
}
