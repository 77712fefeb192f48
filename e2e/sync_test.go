package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// syncOK runs hsmfs sync with args and fails the test unless it exited
// 0, blessed the query that its summary line names, and left DEST equal
// to the mount. It returns the summary line. DEST may be localhost:PATH.
func syncOK(t *testing.T, m *hsmMount, dest string, args ...string) string {
	t.Helper()
	waitClosed(t, m.Mnt)
	r := hsm(t, append(append([]string{"sync"}, args...), m.Mnt, dest)...)
	if r.code != 0 {
		t.Fatalf("hsmfs sync: %v", r)
	}
	line := summary(t, r)
	id := summaryQuery(t, line)
	if st := status(t, m.Mnt); num(t, st, "last_blessed") != id {
		t.Errorf("hsmfs sync said %q, but status says last_blessed %v", line, st["last_blessed"])
	}
	local := strings.TrimPrefix(dest, "localhost:")
	sameTree(t, "after hsmfs sync", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, local, snapOpts{}), "MNT", "DEST")
	return line
}

// summary is the last line hsmfs sync printed on stdout: its summary.
func summary(t *testing.T, r result) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "query ") || !summaryLine.MatchString(last) {
		t.Fatalf("hsmfs sync printed no summary line: %v", r)
	}
	return last
}

// summaryLine: "query 12: 1 path, 35 bytes transferred, 0.21s, blessed".
var summaryLine = regexp.MustCompile(`^query \d+.*: \d+ paths?, \d+ bytes? (would be )?transferred, `)

// summaryQuery reads the query id from a summary line.
func summaryQuery(t *testing.T, line string) uint64 {
	t.Helper()
	f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' || r == ':' })
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("summary line %q: no query id", line)
	}
	return id
}

func lastBlessed(t *testing.T, mnt string) uint64 {
	t.Helper()
	return num(t, status(t, mnt), "last_blessed")
}

// writeScript writes an executable shell script.
// fakeSSH writes, into dir, a stand-in for ssh that runs the command on
// this machine, and returns its path: rsync -e takes it.
func fakeSSH(t *testing.T, dir string) string {
	t.Helper()
	return writeScript(t, filepath.Join(dir, "fake-ssh"), `
# Like ssh HOST COMMAND...: drop the options and the host, run the command here.
while [ $# -gt 0 ]; do case "$1" in -l|-p|-o) shift 2;; -*) shift;; *) break;; esac; done
shift
exec sh -c "$*"
`)
}

func writeScript(t *testing.T, p, body string) string {
	t.Helper()
	must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return p
}

// TestSyncMirror: the first hsmfs sync copies the whole tree into a DEST
// that does not exist; each later one copies an answer, after scripted
// and then random modifications. After each, DEST equals the mount and
// the query is blessed.
func TestSyncMirror(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	must(t, os.MkdirAll(p("d/e/f"), 0o755))
	writeFile(t, p("d/e/f/deep"), "deep")
	writeFile(t, p("top"), "top")
	writeFile(t, p("d/x"), "x")
	must(t, os.Symlink("top", p("link")))
	writeFile(t, p("new\nline"), "a name with a newline")
	reset(t, m.Mnt) // blessed before: only DEST's absence calls for the full copy
	writeFile(t, p("after-bless"), "not in any answer yet")

	dest := filepath.Join(t.TempDir(), "dest")
	if line := syncOK(t, m, dest); !strings.Contains(line, "full copy (DEST does not exist)") {
		t.Errorf("first sync into a missing DEST: %q, want a full copy", line)
	}

	rounds := []struct {
		name string
		do   func()
	}{
		{"create-write", func() {
			writeFile(t, p("d/new"), "new")
			appendTo(t, p("top"), " and more")
		}},
		{"rename-file-and-dir", func() {
			must(t, os.Rename(p("d/x"), p("d/e/x2")))
			must(t, os.Rename(p("d/e"), p("e-moved")))
		}},
		{"remove", func() {
			must(t, os.Remove(p("top")))
			must(t, os.RemoveAll(p("e-moved/f")))
		}},
		{"dir-replaced-by-file", func() {
			must(t, os.RemoveAll(p("d")))
			writeFile(t, p("d"), "d is a file now")
		}},
		{"file-replaced-by-dir", func() {
			must(t, os.Remove(p("d")))
			must(t, os.MkdirAll(p("d/again"), 0o700))
			writeFile(t, p("d/again/f"), "f")
			must(t, os.Chmod(p("after-bless"), 0o600))
		}},
		{"nothing", func() {}},
	}
	for _, rd := range rounds {
		rd.do()
		if line := syncOK(t, m, dest); strings.Contains(line, "full copy") {
			t.Errorf("round %s: %q, want no full copy", rd.name, line)
		}
	}

	seed := uint64(20261129)
	fz := &fuzzer{t: t, rng: rand.New(rand.NewPCG(seed, 0x5c)), mnt: m.Mnt, backing: m.Backing,
		touched: map[string]bool{}, multiIno: map[string]uint64{}, oldPaths: map[string]bool{}}
	for round := 1; round <= 8; round++ {
		for i := 0; i < 40; i++ {
			fz.step()
		}
		t.Logf("random round %d (seed %d)", round, seed)
		syncOK(t, m, dest)
		if t.Failed() {
			t.FailNow()
		}
	}
}

// TestSyncRemote: a host:path DEST goes through the remote shell (-e)
// and the remote rsync (--rsync-path). The remote shell here is a
// stand-in for ssh that runs the command on this machine.
func TestSyncRemote(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "a"), "a")
	must(t, os.Mkdir(filepath.Join(m.Mnt, "d"), 0o755))
	writeFile(t, filepath.Join(m.Mnt, "d", "b"), "b")
	tools := t.TempDir()
	rsh := fakeSSH(t, tools)
	ran := filepath.Join(tools, "remote-rsync-ran")
	remote := writeScript(t, filepath.Join(tools, "remote-rsync"), fmt.Sprintf("echo ran >> %s\nexec rsync \"$@\"\n", ran))
	dest := filepath.Join(t.TempDir(), "dest")
	syncOK(t, m, "localhost:"+dest, "-e", rsh, "--rsync-path", remote)
	must(t, os.Rename(filepath.Join(m.Mnt, "d"), filepath.Join(m.Mnt, "d2")))
	writeFile(t, filepath.Join(m.Mnt, "a"), "changed")
	if line := syncOK(t, m, "localhost:"+dest, "--rsh", rsh, "--rsync-path", remote); strings.Contains(line, "full copy") {
		t.Errorf("second sync: %q, want no full copy", line)
	}
	if data, err := os.ReadFile(ran); err != nil || len(data) == 0 {
		t.Errorf("the --rsync-path program never ran: %v", err)
	}
}

// TestSyncDestFails: when rsync cannot write DEST, hsmfs sync exits 1
// and blesses nothing; once DEST is fixed, the next sync makes it exact.
func TestSyncDestFails(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	must(t, os.MkdirAll(p("d/e"), 0o755))
	writeFile(t, p("d/e/f"), "f")
	reset(t, m.Mnt)
	writeFile(t, p("g"), "g")
	waitClosed(t, m.Mnt)

	// DEST is a file: the full copy cannot even begin.
	dest := filepath.Join(t.TempDir(), "dest")
	writeFile(t, dest, "in the way")
	before := lastBlessed(t, m.Mnt)
	if r := hsm(t, "sync", m.Mnt, dest); r.code != 1 || !strings.Contains(r.stderr, "nothing blessed") {
		t.Errorf("hsmfs sync into a file: %v, want exit 1 and nothing blessed", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("a failed sync moved last_blessed from %d to %d", before, got)
	}
	must(t, os.Remove(dest))
	syncOK(t, m, dest)

	// DEST is read-only (a read-only bind mount of itself): rsync fails.
	writeFile(t, p("d/e/new"), "new")
	must(t, os.Rename(p("g"), p("d/g")))
	waitClosed(t, m.Mnt)
	if out, err := exec.Command("mount", "--bind", dest, dest).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if isMounted(dest) {
			exec.Command("umount", dest).Run()
		}
	})
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", dest).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v: %s", err, out)
	}
	before = lastBlessed(t, m.Mnt)
	r := hsm(t, "sync", m.Mnt, dest)
	if r.code != 1 || !strings.Contains(r.stderr, "nothing blessed") {
		t.Errorf("hsmfs sync into a read-only DEST: %v, want exit 1 and nothing blessed", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("a failed sync moved last_blessed from %d to %d", before, got)
	}
	if out, err := exec.Command("umount", dest).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", dest, err, out)
	}
	syncOK(t, m, dest)
}

// killerRsync writes an rsync that starts a copy and kills it, and then
// itself, with SIGKILL a second into the copy; it runs anything else
// (hsmfs sync's look at DEST, its marker) as rsync does.
func killerRsync(t *testing.T) string {
	return writeScript(t, filepath.Join(t.TempDir(), "killer-rsync"), `
case " $* " in *" --info=stats2 "*) ;; *) exec rsync "$@";; esac
rsync "$@" &
sleep 1
kill -KILL $!
kill -KILL $$
`)
}

// TestSyncKilled: an rsync killed half-way through a full copy and
// through a copy of an answer: exit 1, nothing blessed, and the next
// sync leaves an exact copy. The killed full copy leaves its mark in
// DEST, so that the next sync copies the whole tree again.
func TestSyncKilled(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	must(t, os.Mkdir(p("d"), 0o755))
	for _, n := range []string{"a", "d/b", "d/c"} {
		writeFile(t, p(n), n)
	}
	must(t, os.WriteFile(p("d/big"), big, 0o644))
	reset(t, m.Mnt)
	killer := killerRsync(t)
	slow := []string{"--", "--bwlimit=2000"} // 20 MiB at 2 MB/s: killed well before the end

	dest := filepath.Join(t.TempDir(), "dest")
	before := lastBlessed(t, m.Mnt)
	r := hsm(t, append([]string{"sync", "--rsync", killer, m.Mnt, dest}, slow...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "killed") || !strings.Contains(r.stderr, "nothing blessed") {
		t.Errorf("hsmfs sync with rsync killed in the full copy: %v, want exit 1, killed, nothing blessed", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("a killed sync moved last_blessed from %d to %d", before, got)
	}
	if _, err := os.Stat(filepath.Join(dest, ".hsm")); err != nil {
		t.Errorf("the killed full copy left no mark in DEST: %v", err)
	}
	if line := syncOK(t, m, dest); !strings.Contains(line, "full copy (an earlier full copy into DEST did not complete)") {
		t.Errorf("sync after a killed full copy: %q, want a full copy", line)
	}

	must(t, os.WriteFile(p("d/big2"), big, 0o644))
	writeFile(t, p("a"), "changed")
	waitClosed(t, m.Mnt)
	before = lastBlessed(t, m.Mnt)
	r = hsm(t, append([]string{"sync", "--rsync", killer, m.Mnt, dest}, slow...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "nothing blessed") {
		t.Errorf("hsmfs sync with rsync killed in the copy of an answer: %v, want exit 1, nothing blessed", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("a killed sync moved last_blessed from %d to %d", before, got)
	}
	if line := syncOK(t, m, dest); strings.Contains(line, "full copy") {
		t.Errorf("sync after a killed copy of an answer: %q, want no full copy", line)
	}
}

// startSync starts hsmfs sync in the background. The cleanup kills it if
// the test left it running.
func startSync(t *testing.T, args ...string) (*exec.Cmd, <-chan error, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(hsmfsBin, append([]string{"sync"}, args...)...)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	must(t, cmd.Start())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	return cmd, done, stdout, stderr
}

// stopSync sends SIGTERM and checks that hsmfs sync exits 0 within a
// few seconds.
func stopSync(t *testing.T, cmd *exec.Cmd, done <-chan error, stdout, stderr *syncBuffer) {
	t.Helper()
	start := time.Now()
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("hsmfs sync --every after SIGTERM: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		t.Logf("hsmfs sync --every exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("hsmfs sync --every still runs 10s after SIGTERM\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

// waitBlessedAfter waits until a query that began after period is
// blessed: then every change made before covers DEST.
func waitBlessedAfter(t *testing.T, mnt string, period uint64, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for lastBlessed(t, mnt) <= period {
		if time.Now().After(deadline) {
			t.Fatalf("hsmfs sync --every blessed nothing after period %d in a minute (status %v)\nstderr:\n%s",
				period, status(t, mnt), stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSyncEvery: hsmfs sync --every keeps DEST a copy while the mount
// changes; SIGTERM ends it with exit 0, between rounds and in the middle
// of an rsync (which blesses nothing and leaves no temporary file).
func TestSyncEvery(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	dest := filepath.Join(t.TempDir(), "dest")
	cmd, done, stdout, stderr := startSync(t, "--every", "200ms", m.Mnt, dest)
	for batch := 0; batch < 3; batch++ {
		d := p(fmt.Sprintf("batch%d", batch))
		must(t, os.Mkdir(d, 0o755))
		for i := 0; i < 20; i++ {
			writeFile(t, filepath.Join(d, fmt.Sprintf("f%d", i)), strings.Repeat("x", i*100))
		}
		if batch > 0 {
			must(t, os.Rename(p(fmt.Sprintf("batch%d", batch-1)), p(fmt.Sprintf("moved%d", batch-1))))
			must(t, os.Remove(filepath.Join(d, "f3")))
		}
		waitClosed(t, m.Mnt)
		waitBlessedAfter(t, m.Mnt, num(t, status(t, m.Mnt), "current_period"), stderr)
	}
	stopSync(t, cmd, done, stdout, stderr)
	sameTree(t, "after hsmfs sync --every", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
	if n := strings.Count(stdout.String(), "blessed\n"); n < 3 {
		t.Errorf("hsmfs sync --every printed %d summary lines, want one per round:\n%s", n, stdout)
	}

	// SIGTERM in the middle of a slow copy.
	big := make([]byte, 20<<20)
	must(t, os.WriteFile(p("big"), big, 0o644))
	waitClosed(t, m.Mnt)
	before := lastBlessed(t, m.Mnt)
	cmd, done, stdout, stderr = startSync(t, "--every", "200ms", m.Mnt, dest, "--", "--bwlimit=2000")
	deadline := time.Now().Add(time.Minute)
	for !hasTempFile(dest, ".big.") {
		if time.Now().After(deadline) {
			t.Fatalf("rsync did not begin copying big in a minute\nstderr:\n%s", stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopSync(t, cmd, done, stdout, stderr)
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("the round stopped in its rsync moved last_blessed from %d to %d", before, got)
	}
	if hasTempFile(dest, ".big.") {
		t.Errorf("rsync stopped by hsmfs sync left its temporary file in DEST")
	}
	syncOK(t, m, dest)
}

func hasTempFile(dir, prefix string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

// TestSyncDryRun: --dry-run prints what would be copied and changes
// neither DEST nor the last bless.
func TestSyncDryRun(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "a"), "a")
	dest := filepath.Join(t.TempDir(), "dest")
	waitClosed(t, m.Mnt)

	// Into a DEST that does not exist: a dry full copy, and no DEST.
	r := hsm(t, "sync", "--dry-run", m.Mnt, dest)
	if r.code != 0 || !strings.Contains(r.stdout, "a\n") || !strings.Contains(summary(t, r), "dry run, nothing blessed") {
		t.Errorf("hsmfs sync --dry-run: %v", r)
	}
	if _, err := os.Lstat(dest); err == nil {
		t.Errorf("hsmfs sync --dry-run made DEST")
	}
	syncOK(t, m, dest)

	writeFile(t, filepath.Join(m.Mnt, "b"), "b")
	must(t, os.Remove(filepath.Join(m.Mnt, "a")))
	waitClosed(t, m.Mnt)
	before, destBefore := lastBlessed(t, m.Mnt), snapshot(t, dest, snapOpts{dirTimes: true})
	r = hsm(t, "sync", "-n", m.Mnt, dest)
	if r.code != 0 || !strings.Contains(r.stdout, " b\n") || !strings.Contains(r.stdout, "deleting") {
		t.Errorf("hsmfs sync -n: %v, want b and a deletion listed", r)
	}
	if got := lastBlessed(t, m.Mnt); got != before {
		t.Errorf("hsmfs sync --dry-run moved last_blessed from %d to %d", before, got)
	}
	sameTree(t, "DEST after a dry run", destBefore, snapshot(t, dest, snapOpts{dirTimes: true}), "before", "after")
	syncOK(t, m, dest)
}

// TestSyncCommandLine: a bad command line exits 2 and changes nothing;
// a MOUNTPOINT that is not a mount, or a DEST over the tree, exits 1.
func TestSyncCommandLine(t *testing.T) {
	m := mount(t)
	dest := filepath.Join(t.TempDir(), "dest")
	for _, args := range [][]string{
		{},
		{m.Mnt},
		{m.Mnt, dest, "extra"},
		{"--no-such-flag", m.Mnt, dest},
		{"--every", "soon", m.Mnt, dest},
		{"--every", "0", m.Mnt, dest},
		{"--every", "-1s", m.Mnt, dest},
		{m.Mnt, dest, "--rsh"},
		{"--consumer", "a/b", m.Mnt, dest},
	} {
		r := hsm(t, append([]string{"sync"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "see 'hsmfs sync --help'") {
			t.Errorf("hsmfs sync %q: %v, want exit 2 and a usage error", args, r)
		}
		if strings.Contains(strings.Join(args, " "), "a/b") && !strings.Contains(r.stderr, "not a consumer name") {
			t.Errorf("hsmfs sync --consumer a/b: %q does not say why", r.stderr)
		}
	}
	if _, err := os.Lstat(dest); err == nil {
		t.Errorf("a bad command line made DEST")
	}
	if st := status(t, m.Mnt); num(t, st, "last_query") != 0 {
		t.Errorf("a bad command line ran a query: %v", st)
	}
	if r := hsm(t, "sync", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage: hsmfs sync") {
		t.Errorf("hsmfs sync --help: %v", r)
	}
	if r := hsm(t, "sync", filepath.Dir(dest), dest); r.code != 1 || !strings.Contains(r.stderr, "not an hsmfs mount") {
		t.Errorf("hsmfs sync of a directory that is not a mount: %v, want exit 1", r)
	}
	for _, over := range []string{filepath.Join(m.Mnt, "copy"), m.Backing, filepath.Dir(m.Mnt)} {
		if r := hsm(t, "sync", m.Mnt, over); r.code != 1 || !strings.Contains(r.stderr, "overlap") {
			t.Errorf("hsmfs sync into %s: %v, want exit 1 (overlap)", over, r)
		}
	}
	if r := hsm(t, "sync", "--consumer", "default", m.Mnt, dest); r.code != 0 {
		t.Errorf("hsmfs sync --consumer default: %v", r)
	}
}
