package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestJournalFull: when the journal cannot record (its filesystem is
// below the journal's free-space reserve), every modification fails with
// the journal's error and leaves BACKING untouched, reads keep working,
// and once there is room again modifications work and are listed.
func TestJournalFull(t *testing.T) {
	lfs := newLoopFS(t, "ext4", 300<<20)
	logf := filepath.Join(t.TempDir(), "hsmfs.log") // not on the full filesystem
	// Metrics on a port of the kernel's choosing (.hsm/status names it):
	// every refusal is counted by errno.
	m := mount(t, withJournal(filepath.Join(lfs.mp, "journal")), withArgs("--log", logf, "--metrics", "127.0.0.1:0"))
	mnt := m.Mnt
	p := func(n string) string { return filepath.Join(mnt, n) }
	writeFile(t, p("a"), "content of a\n")
	writeFile(t, p("b"), "content of b\n")
	must(t, os.Mkdir(p("d"), 0o755))
	// A new period: no intent of it is durable yet, so every
	// modification below needs the journal.
	reset(t, mnt)
	backing := snapshot(t, m.Backing, snapOpts{dirTimes: true, withXattrs: true})

	filler := lfs.fill(16 << 20)
	var st unix.Statfs_t
	must(t, unix.Statfs(lfs.mp, &st))
	free := int64(st.Bavail) * int64(st.Bsize)
	t.Logf("journal filesystem filled: %d bytes free", free)
	if free >= 64<<20 {
		t.Fatalf("could not fill the journal's filesystem: %d bytes free", free)
	}

	full := []syscall.Errno{syscall.ENOSPC, syscall.EIO}
	mods := []struct {
		name string
		do   func() error
	}{
		{"create", func() error {
			fd, err := unix.Open(p("new"), unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"open for writing", func() error {
			f, err := os.OpenFile(p("a"), os.O_WRONLY, 0)
			if err == nil {
				_, err = f.WriteString("X")
				f.Close()
			}
			return err
		}},
		{"open with O_TRUNC", func() error {
			f, err := os.OpenFile(p("b"), os.O_WRONLY|os.O_TRUNC, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(p("a"), 1) }},
		{"mkdir", func() error { return os.Mkdir(p("newdir"), 0o755) }},
		{"mknod", func() error { return unix.Mknod(p("fifo"), unix.S_IFIFO|0o644, 0) }},
		{"symlink", func() error { return os.Symlink("a", p("sl")) }},
		{"link", func() error { return os.Link(p("a"), p("a-link")) }},
		{"rename", func() error { return os.Rename(p("a"), p("a2")) }},
		{"unlink", func() error { return os.Remove(p("b")) }},
		{"rmdir", func() error { return os.Remove(p("d")) }},
		{"chmod", func() error { return os.Chmod(p("a"), 0o600) }},
		{"chown", func() error { return os.Lchown(p("a"), 65534, 65534) }},
		{"utimens", func() error { return os.Chtimes(p("a"), time.Unix(1, 0), time.Unix(1, 0)) }},
		{"setxattr", func() error { return unix.Setxattr(p("a"), "user.e2e", []byte("v"), 0) }},
	}
	for _, mod := range mods {
		wantErrno(t, mod.name+" with a full journal", mod.do(), full...)
	}
	st0 := status(t, mnt)
	if st0["journal_low"] != true {
		t.Errorf("status with the journal's disk below its reserve: journal_low %v, want true", st0["journal_low"])
	}
	if r := hsm(t, "status", mnt); r.code != 0 || !strings.Contains(r.stdout, "below its reserve") {
		t.Errorf("hsmfs status does not say that modifications fail: %v", r)
	}
	addr, _ := st0["metrics"].(string)
	fams := scrape(t, addr)
	if v := metricValue(t, fams, "hsmfs_journal_below_reserve"); v != 1 {
		t.Errorf("hsmfs_journal_below_reserve %v, want 1", v)
	}
	if n, enospc := sumValues(fams, "hsmfs_journal_errors_total"), metricValue(t, fams, "hsmfs_journal_errors_total", "errno", "ENOSPC"); n < float64(len(mods)) || enospc < 1 {
		t.Errorf("metrics count %v operations refused by the journal (%v with ENOSPC); %d were", n, enospc, len(mods))
	}
	sameTree(t, "BACKING after the refused modifications", backing,
		snapshot(t, m.Backing, snapOpts{dirTimes: true, withXattrs: true}), "before", "after")

	// Reads do not need the journal.
	if got := readFile(t, p("a")); got != "content of a\n" {
		t.Errorf("read a: %q", got)
	}
	samePaths(t, "ls MNT", listDir(t, mnt), []string{"a", "b", "d"})
	if _, err := os.Stat(p("d")); err != nil {
		t.Errorf("stat d: %v", err)
	}
	status(t, mnt)

	must(t, os.Remove(filler))
	must(t, unix.Statfs(lfs.mp, &st))
	t.Logf("filler removed: %d bytes free", int64(st.Bavail)*int64(st.Bsize))
	if low := status(t, mnt)["journal_low"]; low != false {
		t.Errorf("status with room again: journal_low %v, want false", low)
	}
	writeFile(t, p("new"), "new\n")
	must(t, os.Mkdir(p("newdir"), 0o755))
	must(t, os.Rename(p("a"), p("a2")))
	must(t, os.Remove(p("b")))
	must(t, os.Chmod(p("a2"), 0o600))
	waitClosed(t, mnt)
	a := query(t, mnt)
	for _, want := range []string{"new", "newdir", "a", "a2", "b"} {
		if !slices.Contains(a.Paths(), want) {
			t.Errorf("after the journal had room again: the query lacks %q: %q", want, a.Paths())
		}
	}
	bless(t, mnt)
}
