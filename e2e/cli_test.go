package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// queryID reads "query N" from what `hsmfs changes` wrote on stderr.
func queryID(t *testing.T, r result) uint64 {
	t.Helper()
	for _, line := range strings.Split(r.stderr, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "query "); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				return n
			}
		}
	}
	t.Fatalf("hsmfs changes did not print the query id on stderr: %v", r)
	return 0
}

var statusKeys = []string{"pid", "backing", "mountpoint", "journal", "current_period", "last_query",
	"last_blessed", "pending_paths", "inflight", "open_for_write", "recovered", "journal_syncs", "run"}

// TestCLI goes through every client command on a live mount.
func TestCLI(t *testing.T) {
	m := mount(t)
	p := func(n string) string { return filepath.Join(m.Mnt, n) }
	nl := "new\nline"
	writeFile(t, p("plain"), "x")
	writeFile(t, p(nl), "y")
	must(t, os.Mkdir(p("dir"), 0o755))
	waitClosed(t, m.Mnt)

	r := hsm(t, "changes", m.Mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs changes: %v", r)
	}
	samePaths(t, "hsmfs changes", parsePlain(t, []byte(r.stdout)), []string{"dir", "plain"})
	samePaths(t, ".hsm/changes", plain(t, m.Mnt), []string{"dir", "plain"})

	r = hsm(t, "changes", "--json", m.Mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs changes --json: %v", r)
	}
	a := parseAnswer(t, []byte(r.stdout))
	samePaths(t, "hsmfs changes --json", a.Paths(), []string{"dir", nl, "plain"})
	if a.Query != queryID(t, r) {
		t.Errorf("hsmfs changes --json: header query %d, stderr says %d", a.Query, queryID(t, r))
	}

	r = hsm(t, "changes", "-0", m.Mnt)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "\x00") {
		t.Fatalf("hsmfs changes -0: %v", r)
	}
	samePaths(t, "hsmfs changes -0", strings.Split(strings.TrimSuffix(r.stdout, "\x00"), "\x00"), []string{"dir", nl, "plain"})
	id := queryID(t, r)

	// bless ID
	if r := hsm(t, "bless", fmt.Sprint(id), m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs bless %d: %v", id, r)
	}
	st := status(t, m.Mnt)
	if num(t, st, "last_blessed") != id {
		t.Errorf("after hsmfs bless %d: status %v", id, st)
	}
	if r := hsm(t, "changes", m.Mnt); r.code != 0 || r.stdout != "" {
		t.Errorf("hsmfs changes right after the bless: %v, want nothing", r)
	}

	// bless the latest query
	writeFile(t, p("second"), "z")
	waitClosed(t, m.Mnt)
	r = hsm(t, "changes", m.Mnt)
	samePaths(t, "hsmfs changes", parsePlain(t, []byte(r.stdout)), []string{"second"})
	if r := hsm(t, "bless", m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs bless: %v", r)
	}
	if st := status(t, m.Mnt); num(t, st, "last_blessed") != queryID(t, r) || num(t, st, "last_query") != queryID(t, r) {
		t.Errorf("after hsmfs bless, status %v, want query %d blessed", st, queryID(t, r))
	}

	// checkpoint: a new period, not a query
	before := getState(t, m.Mnt)
	if r := hsm(t, "checkpoint", m.Mnt); r.code != 0 {
		t.Fatalf("hsmfs checkpoint: %v", r)
	}
	after := getState(t, m.Mnt)
	if after.current <= before.current || after.lastQuery != before.lastQuery || after.lastBlessed != before.lastBlessed {
		t.Errorf("hsmfs checkpoint: state %+v, then %+v, want a new period only", before, after)
	}
	if r := hsm(t, "bless", fmt.Sprint(after.current), m.Mnt); r.code != 1 {
		t.Errorf("hsmfs bless %d (a checkpoint, not a query): %v, want exit 1", after.current, r)
	}

	// status, both forms
	r = hsm(t, "status", m.Mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs status: %v", r)
	}
	// For people: words, aligned, ages; no Go syntax.
	for _, k := range []string{"mountpoint:", "backing:", "journal:", "period:", "pending:", "in flight:",
		"recovered:", "CONSUMER", "default"} {
		if !strings.Contains(r.stdout, k) {
			t.Errorf("hsmfs status lacks %q:\n%s", k, r.stdout)
		}
	}
	for _, bad := range []string{"map[", "{", "}", "[]", "%!"} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("hsmfs status shows Go syntax %q:\n%s", bad, r.stdout)
		}
	}
	r = hsm(t, "status", "--json", m.Mnt)
	var js map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &js) != nil {
		t.Fatalf("hsmfs status --json: %v", r)
	}
	for _, k := range statusKeys {
		if _, ok := js[k]; !ok {
			t.Errorf("hsmfs status --json lacks %q: %s", k, r.stdout)
		}
	}
	for k, want := range map[string]string{"backing": m.Backing, "mountpoint": m.Mnt, "journal": m.Journal} {
		if js[k] != want {
			t.Errorf("status %s = %v, want %s", k, js[k], want)
		}
	}
	if js["pid"] != float64(m.Pid) || js["recovered"] != false {
		t.Errorf("status: %s", r.stdout)
	}

	// umount: the mount is gone and the daemon has exited.
	m.unmount(t)
	if r := hsm(t, "status", m.Mnt); r.code != 1 {
		t.Errorf("hsmfs status on an unmounted directory: %v, want exit 1", r)
	}
}

// foreground runs `hsmfs mount -f` and returns once the mount is live.
// The test process is the daemon's parent: a goroutine reaps it (else
// `hsmfs umount` would wait for a zombie) and reports on the channel.
func foreground(t *testing.T, b, mn, j string) (*exec.Cmd, <-chan error, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(hsmfsBin, "mount", "-f", "--journal", j, b, mn)
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
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
		if isMounted(mn) {
			forceUnmount(t, mn, 0)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for !isMounted(mn) {
		select {
		case err := <-done:
			t.Fatalf("hsmfs mount -f exited before the mount was live: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hsmfs mount -f: not mounted after a minute\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid := num(t, status(t, mn), "pid"); pid != uint64(cmd.Process.Pid) {
		t.Errorf("status pid %d, but the foreground daemon is %d", pid, cmd.Process.Pid)
	}
	return cmd, done, stderr
}

// syncBuffer is a bytes.Buffer that a running command may write while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitExit(t *testing.T, what string, done <-chan error, stderr *syncBuffer) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: hsmfs mount -f: %v\n%s", what, err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: hsmfs mount -f did not exit\n%s", what, stderr.String())
	}
	if !strings.Contains(stderr.String(), "unmounted cleanly") {
		t.Errorf("%s: the foreground daemon did not unmount cleanly:\n%s", what, stderr.String())
	}
}

// TestForeground: `hsmfs mount -f` unmounts cleanly on SIGTERM and
// SIGINT, and `hsmfs umount` works on it; the next mount of the journal
// is not a recovery and has every record.
func TestForeground(t *testing.T) {
	b, mn, j := newDirs(t)
	var written []string
	for _, how := range []string{"SIGTERM", "SIGINT", "hsmfs umount"} {
		cmd, done, stderr := foreground(t, b, mn, j)
		name := strings.ReplaceAll(how, " ", "-")
		writeFile(t, filepath.Join(mn, name), how)
		written = append(written, name)
		waitClosed(t, mn)
		switch how {
		case "SIGTERM":
			must(t, cmd.Process.Signal(syscall.SIGTERM))
		case "SIGINT":
			must(t, cmd.Process.Signal(syscall.SIGINT))
		default:
			if r := hsm(t, "umount", mn); r.code != 0 {
				t.Errorf("hsmfs umount of a foreground mount: %v", r)
			}
		}
		waitExit(t, how, done, stderr)
		if isMounted(mn) {
			t.Fatalf("after %s, %s is still mounted", how, mn)
		}
	}
	m := mount(t, withBacking(b), withMnt(mn), withJournal(j))
	if st := status(t, m.Mnt); st["recovered"] != false {
		t.Errorf("mount after clean foreground unmounts: status %v, want recovered false", st)
	}
	a := query(t, m.Mnt)
	if a.Recovered {
		t.Errorf("mount after clean foreground unmounts: changes.json header says recovered")
	}
	for _, w := range written {
		if !slices.Contains(a.Paths(), w) {
			t.Errorf("the journal lost %q across the foreground mounts: %q", w, a.Paths())
		}
	}
}
