package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// What the command line says when something is wrong, and how it says
// what is right: the cause, not a code; words, not Go values.

// TestMountErrorsSayWhy: an option that FUSE does not know fails with
// fusermount's own words and the log's name; a MOUNTPOINT that holds
// files is mounted over with a warning; a busy umount names who holds
// the mount; a dead mount says that its daemon died and how to clear it.
func TestMountErrorsSayWhy(t *testing.T) {
	b, mn, j := newDirs(t)
	r := hsm(t, "mount", "--journal", j, "-o", "bogusopt", b, mn)
	if r.code != 1 || !strings.Contains(r.stderr, "unknown option 'bogusopt'") || !strings.Contains(r.stderr, j+".log") {
		t.Errorf("mount -o bogusopt: %v, want exit 1 with fusermount's words and the log", r)
	}
	if strings.Contains(r.stderr, "code 256") {
		t.Errorf("mount -o bogusopt shows a wait status: %q", r.stderr)
	}
	if isMounted(mn) {
		forceUnmount(t, mn, 0)
	}

	writeFile(t, filepath.Join(mn, "hidden"), "x")
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j))
	if !strings.Contains(m.Stderr, "is not empty") {
		t.Errorf("mount over a MOUNTPOINT that holds a file: stderr %q, want a warning", m.Stderr)
	}

	// Busy: a process with its working directory in the mount.
	sleeper := exec.Command("sleep", "60")
	sleeper.Dir = mn
	must(t, sleeper.Start())
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	r = hsm(t, "umount", mn)
	if r.code != 1 || !strings.Contains(r.stderr, "busy") || !strings.Contains(r.stderr, "(sleep) cwd") {
		t.Errorf("umount of a busy mount: %v, want exit 1 naming the sleep", r)
	}
	sleeper.Process.Kill()
	sleeper.Wait()

	// Dead: the daemon killed.
	killDaemon(t, m)
	for _, args := range [][]string{{"status", mn}, {"changes", mn}, {"sync", mn, filepath.Join(t.TempDir(), "d")}, {"bless", mn}} {
		r := hsm(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "daemon of this mount has died") || !strings.Contains(r.stderr, "hsmfs umount") {
			t.Errorf("hsmfs %s on a dead mount: %v, want exit 1 saying the daemon died", args[0], r)
		}
	}
	if r := hsm(t, "umount", mn); r.code != 0 {
		t.Errorf("umount of the dead mount: %v", r)
	}
}

// TestCLIText: the words of consumer list and sync, the control files'
// times, and reading a big answer with big reads, which must not fill
// the log.
func TestCLIText(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "one"), "1")
	if r := hsm(t, "consumer", "add", m.Mnt, "backup"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	r := hsm(t, "consumer", "add", m.Mnt, "backup")
	if r.code != 1 || strings.Count(r.stderr, "exist") != 1 {
		t.Errorf("consumer add of a taken name: %v, want exit 1 saying so once", r)
	}
	r = hsm(t, "consumer", "list", m.Mnt)
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("consumer list: a row ends in spaces: %q", line)
		}
	}
	dest := filepath.Join(t.TempDir(), "dest")
	syncOK(t, m, dest)
	writeFile(t, filepath.Join(m.Mnt, "two"), "2")
	if line := syncOK(t, m, dest); !strings.Contains(line, ": 1 path, 1 byte transferred") {
		t.Errorf("sync of one path of one byte: %q", line)
	}
	// The default consumer's times are kept: consumer list says how long
	// ago.
	if r := hsm(t, "consumer", "list", m.Mnt); !regexp.MustCompile(`default +\d+ \((just now|\d+s ago)\) +\d+ \((just now|\d+s ago)\)`).MatchString(r.stdout) {
		t.Errorf("consumer list does not say when the default consumer last queried and blessed:\n%s", r.stdout)
	}
	for _, name := range []string{"", "status", "ctl", "changes"} {
		fi, err := os.Stat(filepath.Join(m.Mnt, ".hsm", name))
		must(t, err)
		if time.Since(fi.ModTime()) > time.Hour {
			t.Errorf(".hsm/%s is dated %v", name, fi.ModTime())
		}
	}
	// A big answer read 1 MiB at a time.
	dir := filepath.Join(m.Mnt, "many")
	must(t, os.Mkdir(dir, 0o755))
	for i := 0; i < 12000; i++ {
		f, err := os.Create(filepath.Join(dir, strings.Repeat("n", 40)+strconv.Itoa(i)))
		must(t, err)
		f.Close()
	}
	waitClosed(t, m.Mnt)
	logStart := fileSize(m.Log)
	if out, err := exec.Command("dd", "if="+filepath.Join(m.Mnt, ".hsm", "changes.json"), "of=/dev/null", "bs=1M").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	if st, _ := os.Stat(m.Log); st.Size() > logStart {
		data, _ := os.ReadFile(m.Log)
		if strings.Contains(string(data[logStart:]), "trySplice") {
			t.Errorf("reading a big answer logged failed splices:\n%s", data[logStart:])
		}
	}
}

// TestJournalTools: dump and check refuse a journal in use before they
// print anything, and print documented names, not Go's; reset sets the
// log, the tree index and its log of names aside with the journal.
func TestJournalTools(t *testing.T) {
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "f"), "f")
	waitClosed(t, m.Mnt)
	for _, verb := range []string{"dump", "check"} {
		r := hsm(t, "journal", verb, m.Journal)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "in use") {
			t.Errorf("journal %s of a mounted journal: %v, want exit 1, nothing on stdout, in use", verb, r)
		}
	}
	m.unmount(t)
	goSyntax := regexp.MustCompile(`[A-Z][a-z]+[A-Z][A-Za-z]*:|map\[|\{[A-Z]`)
	r := hsm(t, "journal", "dump", m.Journal)
	if r.code != 0 || !strings.Contains(r.stdout, "current period:") || !strings.Contains(r.stdout, "period\tseq\trun\top") {
		t.Errorf("journal dump: %v", r)
	}
	r2 := hsm(t, "journal", "check", m.Journal)
	if r2.code != 0 || !strings.Contains(r2.stdout, "records:") || !strings.Contains(r2.stdout, "is sound") {
		t.Errorf("journal check: %v", r2)
	}
	for _, out := range []string{r.stdout, r2.stdout} {
		if goSyntax.MatchString(out) {
			t.Errorf("Go syntax in %q", goSyntax.FindString(out))
		}
	}
	r = hsm(t, "journal", "check", "--json", m.Journal)
	if r.code != 0 || !strings.Contains(r.stdout, `"last_blessed":`) || !strings.Contains(r.stdout, `"sound":true`) {
		t.Errorf("journal check --json: %v", r)
	}
	r = hsm(t, "journal", "reset", m.Journal)
	if r.code != 0 {
		t.Fatalf("journal reset: %v", r)
	}
	aside, _ := filepath.Glob(m.Journal + ".reset-*")
	var names []string
	for _, p := range aside {
		names = append(names, strings.TrimPrefix(filepath.Base(p), filepath.Base(m.Journal)+".reset-")[16:])
	}
	samePaths(t, "set aside", names, []string{"", ".log", ".tree", ".tree.log"})
	for _, suffix := range []string{"", ".log", ".tree", ".tree.log"} {
		if _, err := os.Stat(m.Journal + suffix); err == nil {
			t.Errorf("%s is still there after the reset", m.Journal+suffix)
		}
	}
}
