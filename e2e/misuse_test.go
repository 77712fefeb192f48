package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The misuses of issue 24: each of these lost a change, or let another
// user in, before it was refused or handled.

// TestSecondTrackerRefused: a second hsmfs mount of a BACKING that one
// tracks is refused, whatever its journal, mount point or the path that
// names BACKING (the same path, a symlink, a bind mount, the in-place
// mount itself), and so is one of a directory beneath it. The refusal
// names the mount that tracks it. Once that mount is gone (unmounted, or
// its daemon killed), the directory can be mounted again.
func TestSecondTrackerRefused(t *testing.T) {
	m := mount(t)
	base := t.TempDir()
	other := filepath.Join(base, "mnt2")
	must(t, os.Mkdir(other, 0o755))
	j2 := func() []string { return []string{"--journal", filepath.Join(t.TempDir(), "j2")} }
	mustRefuse(t, other, []string{"tracked already", m.Mnt}, append(j2(), m.Backing, other)...)
	mustRefuse(t, other, []string{"tracked already", m.Mnt}, append(j2(), m.Backing+"/", other)...)
	link := filepath.Join(base, "link")
	must(t, os.Symlink(m.Backing, link))
	mustRefuse(t, other, []string{"tracked already", m.Mnt}, append(j2(), link, other)...)
	must(t, os.Mkdir(filepath.Join(m.Mnt, "sub"), 0o755))
	mustRefuse(t, other, []string{"overlaps", m.Mnt}, append(j2(), filepath.Join(m.Backing, "sub"), other)...)
	mustRefuse(t, other, []string{"tracked already", m.Mnt}, append(j2(), m.Mnt, other)...)
	// A bind mount of BACKING: another path to the same inode, which
	// only the lock on the directory itself can tell.
	bind := filepath.Join(base, "bind")
	must(t, os.Mkdir(bind, 0o755))
	if out, err := exec.Command("mount", "--bind", m.Backing, bind).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", bind).Run() })
	mustRefuse(t, other, []string{"tracked already", m.Mnt, fmt.Sprintf("pid %d", m.Pid)}, append(j2(), bind, other)...)
	if out, err := exec.Command("umount", bind).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", bind, err, out)
	}

	// The first mount saw everything, and still works.
	writeFile(t, filepath.Join(m.Mnt, "x"), "x")
	waitClosed(t, m.Mnt)
	samePaths(t, "the first mount's answer", plain(t, m.Mnt), []string{"sub", "x"})

	// Its daemon killed: the kernel dropped its lock, and another journal
	// may take the directory over.
	killDaemon(t, m)
	m2 := mount(t, withBacking(m.Backing), withMnt(other), withJournal(filepath.Join(t.TempDir(), "j3")))
	m2.unmount(t)
	must(t, exec.Command("umount", "-l", m.Mnt).Run())

	// In place: the directory is its own mount point.
	b, mn, j := newDirs(t)
	ip := mount(t, withBacking(b), withMnt(b), withJournal(j))
	mustRefuse(t, mn, []string{"tracked already", b}, append(j2(), b, mn)...)
	ip.unmount(t)
	mount(t, withBacking(b), withMnt(mn), withJournal(filepath.Join(t.TempDir(), "j4")))
}

// TestSyncAfterForeignBless: hsmfs sync notices a bless that it did not
// make (hsmfs bless, bless in ctl) and copies the whole tree, so that the
// mirror stays exact; a consumer whose last bless was made by hsmfs sync
// into another DEST is refused until --full, and a consumer per DEST
// works side by side.
func TestSyncAfterForeignBless(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	dest := filepath.Join(t.TempDir(), "dest")
	writeFile(t, p("first"), "1")
	syncOK(t, m, dest)

	writeFile(t, p("a"), "a")
	waitClosed(t, m.Mnt)
	if r := hsm(t, "changes", m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs changes: %v", r)
	}
	if r := hsm(t, "bless", m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs bless: %v", r)
	}
	writeFile(t, p("b"), "b")
	line := syncOK(t, m, dest) // a is in DEST again, or syncOK fails
	if !strings.Contains(line, "full copy (the last bless") || !strings.Contains(line, "hsmfs bless by") {
		t.Errorf("sync after hsmfs bless: %q, want a full copy that says why", line)
	}
	if line := syncOK(t, m, dest); strings.Contains(line, "full copy") {
		t.Errorf("the next sync: %q, want no full copy", line)
	}

	// A plain bless written to ctl by hand.
	must(t, os.Remove(p("a")))
	waitClosed(t, m.Mnt)
	plain(t, m.Mnt)
	bless(t, m.Mnt)
	writeFile(t, p("c"), "c")
	if line := syncOK(t, m, dest); !strings.Contains(line, "named no one") {
		t.Errorf("sync after a plain bless in ctl: %q, want a full copy that says why", line)
	}

	// A second DEST on the same consumer: refused, nothing blessed.
	dest2 := filepath.Join(t.TempDir(), "dest2")
	before := lastBlessed(t, m.Mnt)
	r := hsm(t, "sync", m.Mnt, dest2)
	if r.code != 1 || !strings.Contains(r.stderr, "one consumer keeps one mirror") || !strings.Contains(r.stderr, dest) {
		t.Errorf("sync of the same consumer into a second DEST: %v, want exit 1 naming the first DEST", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("the refused sync moved last_blessed from %d to %d", before, got)
	}
	// --full takes the consumer over; the first DEST is then refused.
	syncOK(t, m, dest2, "--full")
	if r := hsm(t, "sync", m.Mnt, dest); r.code != 1 || !strings.Contains(r.stderr, "one consumer keeps one mirror") {
		t.Errorf("sync into the first DEST after the takeover: %v, want exit 1", r)
	}
	// One consumer per DEST: both stay exact.
	if r := hsm(t, "consumer", "add", m.Mnt, "second"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	consumerSyncOK(t, m, dest, "second")
	writeFile(t, p("d"), "d")
	syncOK(t, m, dest2)
	consumerSyncOK(t, m, dest, "second")
}

// consumerSyncOK runs hsmfs sync --consumer name and checks that DEST
// equals the mount.
func consumerSyncOK(t *testing.T, m *hsmMount, dest, name string) {
	t.Helper()
	waitClosed(t, m.Mnt)
	if r := hsm(t, "sync", "--consumer", name, m.Mnt, dest); r.code != 0 {
		t.Fatalf("hsmfs sync --consumer %s: %v", name, r)
	}
	sameTree(t, "after hsmfs sync --consumer "+name, snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
}

// TestPlainBlessOfFullAnswerRefused: a reader of the plain answer cannot
// see "full"; its plain bless of such an answer fails with EINVAL and
// ctl says why, and only "bless ID full" (hsmfs bless --full) ends the
// requirement.
func TestPlainBlessOfFullAnswerRefused(t *testing.T) {
	m := mount(t)
	if r := hsm(t, "consumer", "add", m.Mnt, "plain"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	dir := filepath.Join(m.Mnt, ".hsm", "consumers", "plain")
	ctlOf := func(cmd string) error {
		f, err := os.OpenFile(filepath.Join(dir, "ctl"), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte(cmd))
		f.Close()
		return werr
	}
	writeFile(t, filepath.Join(m.Mnt, "a"), "a")
	waitClosed(t, m.Mnt)
	if _, err := os.ReadFile(filepath.Join(dir, "changes")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "plain bless of a full answer", ctlOf("bless\n"), syscall.EINVAL)
	text, err := os.ReadFile(filepath.Join(dir, "ctl"))
	must(t, err)
	if !strings.Contains(string(text), "last error: ") || !strings.Contains(string(text), "full") {
		t.Errorf("ctl after the refused bless does not say why:\n%s", text)
	}
	cs := consumerList(t, m.Mnt)
	if cs["plain"]["full"] != true || cs["plain"]["last_blessed"] == cs["plain"]["last_query"] {
		t.Errorf("the refused bless changed the consumer: %v", cs["plain"])
	}
	// The command line says it too, and takes --full.
	r := hsm(t, "bless", "--consumer", "plain", m.Mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "full") {
		t.Errorf("hsmfs bless of a full answer without --full: %v, want exit 1 saying full", r)
	}
	// The default consumer is not full: a plain bless is enough there.
	query(t, m.Mnt)
	bless(t, m.Mnt)
	data, err := os.ReadFile(filepath.Join(dir, "changes.json"))
	must(t, err)
	id := fmt.Sprint(parseAnswer(t, data).Query)
	must(t, ctlOf("bless "+id+" full\n"))
	cs = consumerList(t, m.Mnt)
	if cs["plain"]["full"] != false {
		t.Errorf("after bless %s full the consumer still says full: %v", id, cs["plain"])
	}
	// From now on a plain bless is enough.
	writeFile(t, filepath.Join(m.Mnt, "b"), "b")
	waitClosed(t, m.Mnt)
	if _, err := os.ReadFile(filepath.Join(dir, "changes")); err != nil {
		t.Fatal(err)
	}
	must(t, ctlOf("bless\n"))
}

// TestJournalPrivate: a journal directory made beforehand with mode 0755
// is made 0700, and every file of the journal, and its log, index and
// log of names beside it, is 0600; a journal directory that others may
// write is refused.
func TestJournalPrivate(t *testing.T) {
	b, mn, j := newDirs(t)
	must(t, os.Mkdir(j, 0o755))
	must(t, os.Chmod(j, 0o755))
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j))
	writeFile(t, filepath.Join(mn, "f"), "f")
	waitClosed(t, mn)
	m.unmount(t) // the index and its log are written at unmount
	private := func(p string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%v", err)
			return
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	private(j, 0o700)
	ents, err := os.ReadDir(j)
	must(t, err)
	if len(ents) < 4 {
		t.Errorf("the journal holds only %d files", len(ents))
	}
	for _, e := range ents {
		private(filepath.Join(j, e.Name()), 0o600)
	}
	for _, suffix := range []string{".log", ".tree", ".tree.log"} {
		private(j+suffix, 0o600)
	}

	// Writable by others: refused, and left as it was.
	must(t, os.Chmod(j, 0o777))
	mustRefuse(t, mn, []string{"chmod 700"}, "--journal", j, b, mn)
	private(j, 0o777)
}

// TestMountKeepsNoDescriptor: the daemon keeps none of the descriptors of
// the caller of hsmfs mount: a pipe on fd 5 sees its end as soon as hsmfs
// mount exits, and a file that the caller's shell holds beneath an
// in-place mount is named as the shell's, not as hsmfs's.
func TestMountKeepsNoDescriptor(t *testing.T) {
	b, mn, j := newDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Registered first: a daemon that kept the pipe keeps cat, and so
	// this test's end of it, open until it is unmounted.
	t.Cleanup(func() {
		for _, p := range []string{mn, b} {
			if isMounted(p) {
				hsm(t, "umount", p)
			}
		}
	})
	script := fmt.Sprintf(`(%q mount --journal %q %q %q 5>&1) | cat; echo piped`, hsmfsBin, j, b, mn)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "piped") {
		t.Fatalf("hsmfs mount with fd 5 on a pipe: %v, %q (after %v): the daemon kept the pipe", err, out, time.Since(start))
	}
	t.Logf("the pipe ended %v after the start", time.Since(start).Round(time.Millisecond))
	if r := hsm(t, "umount", mn); r.code != 0 {
		t.Fatalf("umount: %v", r)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// In place, with the shell holding a file on fd 7.
	writeFile(t, filepath.Join(b, "held"), "")
	script = fmt.Sprintf(`exec 7<%q; %q mount --journal %q %q %q; echo "shell $$"`, filepath.Join(b, "held"), hsmfsBin, j, b, b)
	cmd = exec.CommandContext(ctx, "bash", "-c", script)
	cmd.WaitDelay = 2 * time.Second
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in-place mount: %v: %s", err, out)
	}
	text := string(out)
	shell := strings.TrimSpace(text[strings.LastIndex(text, "shell ")+len("shell "):])
	if !strings.Contains(text, "pid "+shell+" (bash) fd 7") || strings.Contains(text, "(hsmfs)") {
		t.Errorf("the in-place warning %q: want the shell (pid %s) named, and not hsmfs", text, shell)
	}
}
