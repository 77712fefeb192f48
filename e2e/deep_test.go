package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// walkTo opens the directory rel beneath root one component at a time,
// as a program that chdirs down a tree would: no path handed to the
// kernel is longer than one name.
func walkTo(t *testing.T, root, rel string) int {
	t.Helper()
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	for _, c := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("walk %s: %v", short(rel), err)
		}
		fd = next
	}
	return fd
}

func short(rel string) string {
	if len(rel) < 80 {
		return rel
	}
	return fmt.Sprintf("%s...%s (%d bytes)", rel[:40], rel[len(rel)-30:], len(rel))
}

// procAt names (dirfd, name) for the calls that have no *at form.
func procAt(dirfd int, name string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name) }

// TestDeeperThanPathMax: every operation works through the mount at a
// depth past twice PATH_MAX, with names of 255 bytes, and BACKING holds
// the result. The backing path itself is long too.
func TestDeeperThanPathMax(t *testing.T) {
	base := t.TempDir()
	long := filepath.Join(base, strings.Repeat("b", 200), strings.Repeat("c", 200))
	backing, mnt := filepath.Join(long, "backing"), filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		must(t, os.MkdirAll(d, 0o755))
	}
	m := permMount(t, withBacking(backing), withMnt(mnt))
	comp := strings.Repeat("d", 255)
	var comps []string
	for len(strings.Join(comps, "/")) < 2*4096+300 {
		comps = append(comps, comp)
	}
	// mkdir level by level from the level above.
	for i := range comps {
		parent := "."
		if i > 0 {
			parent = strings.Join(comps[:i], "/")
		}
		fd := walkTo(t, m.Mnt, parent)
		err := unix.Mkdirat(fd, comps[i], 0o755)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("mkdir at depth %d (%d bytes): %v", i+1, len(strings.Join(comps[:i+1], "/")), err)
		}
	}
	rel := strings.Join(comps, "/")
	d := walkTo(t, m.Mnt, rel)
	defer unix.Close(d)
	name := strings.Repeat("f", 255)
	fd, err := unix.Openat(d, name, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	must(t, err)
	_, err = unix.Write(fd, []byte("deep content\n"))
	must(t, err)
	must(t, unix.Ftruncate(fd, 5))
	unix.Close(fd)
	steps := []struct {
		what string
		do   func() error
	}{
		{"chmod", func() error { return unix.Fchmodat(d, name, 0o640, 0) }},
		{"chown", func() error { return unix.Fchownat(d, name, 65534, 65534, unix.AT_SYMLINK_NOFOLLOW) }},
		{"truncate by name", func() error {
			return unix.Truncate(procAt(d, name), 4)
		}},
		{"utimens", func() error {
			return unix.UtimesNanoAt(d, name, []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"setxattr", func() error { return unix.Lsetxattr(procAt(d, name), "user.k", []byte("v"), 0) }},
		{"symlink", func() error { return unix.Symlinkat("target", d, "s") }},
		{"link", func() error { return unix.Linkat(d, name, d, "hard", 0) }},
		{"rename", func() error { return unix.Renameat(d, "hard", d, "hard2") }},
		{"mknod", func() error { return unix.Mknodat(d, "fifo", unix.S_IFIFO|0o600, 0) }},
		{"mkdir", func() error { return unix.Mkdirat(d, "sub", 0o700) }},
		{"rmdir", func() error { return unix.Unlinkat(d, "sub", unix.AT_REMOVEDIR) }},
		{"unlink", func() error { return unix.Unlinkat(d, "fifo", 0) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Errorf("%s at %d bytes deep: %v", s.what, len(rel), err)
		}
	}
	// Reads at depth: stat, readlink, getxattr, readdir.
	var st unix.Stat_t
	must(t, unix.Fstatat(d, name, &st, unix.AT_SYMLINK_NOFOLLOW))
	if st.Size != 4 || st.Mode&0o7777 != 0o640 || st.Uid != 65534 || st.Nlink != 2 {
		t.Errorf("stat at depth: size %d mode %o uid %d nlink %d, want 4 0640 65534 2", st.Size, st.Mode&0o7777, st.Uid, st.Nlink)
	}
	buf := make([]byte, 64)
	if n, err := unix.Readlinkat(d, "s", buf); err != nil || string(buf[:n]) != "target" {
		t.Errorf("readlink at depth: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Lgetxattr(procAt(d, name), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("getxattr at depth: %q, %v", buf[:max(n, 0)], err)
	}
	rd, err := unix.Openat(d, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	n, err := unix.Getdents(rd, make([]byte, 4096))
	unix.Close(rd)
	if err != nil || n <= 0 {
		t.Errorf("readdir at depth: %d, %v", n, err)
	}

	// BACKING holds it all.
	bd := walkTo(t, m.Backing, rel)
	defer unix.Close(bd)
	var bst unix.Stat_t
	must(t, unix.Fstatat(bd, name, &bst, unix.AT_SYMLINK_NOFOLLOW))
	if bst.Ino != 0 && (bst.Size != 4 || bst.Mode != st.Mode || bst.Uid != 65534 || bst.Nlink != 2) {
		t.Errorf("BACKING at depth: size %d mode %o uid %d nlink %d", bst.Size, bst.Mode, bst.Uid, bst.Nlink)
	}
	content := make([]byte, 16)
	bf, err := unix.Openat(bd, "hard2", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	cn, _ := unix.Read(bf, content)
	unix.Close(bf)
	if !bytes.Equal(content[:cn], []byte("deep")) {
		t.Errorf("BACKING hard2 at depth holds %q, want \"deep\"", content[:cn])
	}
	// And the tracker lists the deep paths.
	a := query(t, m.Mnt)
	for _, p := range []string{rel + "/" + name, rel + "/s", rel + "/hard2"} {
		if a.Get(p) == nil {
			t.Errorf("the answer does not list %s", short(p))
		}
	}
}
