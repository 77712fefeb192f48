package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// clientLoop is a user's work that a SIGKILL of the daemon cuts short at
// any point: git commits of changed files and sqlite transactions, on
// and on. Git's lock files left by a cut are removed, as a user would.
const clientLoop = `
cd work
[ -d .git ] || { git init -q -b main . && echo 0 > n && git add n && git commit -qm 0; }
rm -f .git/index.lock .git/HEAD.lock .git/refs/heads/main.lock
[ -f db ] || sqlite3 db 'create table t(k integer primary key, v text);'
i=0
while :; do
	i=$((i + 1))
	echo "$i" >> n && mkdir -p "d$((i % 7))" && echo "$i" > "d$((i % 7))/f$((i % 5))"
	[ $((i % 9)) -eq 0 ] && rm -rf "d$((i % 7))"
	git add -A && git commit -qm "$i"
	sqlite3 db "begin; insert into t(v) values ('$i'), ('$i b'); delete from t where k = (select min(k) from t); commit;"
done`

// TestRealClientsKilled: git and sqlite3 work on the mount while the
// daemon is SIGKILLed at random moments, and a consumer copies between
// the kills; after a remount the programs go on. At the end, the copy
// kept from the answers must equal the mount, git fsck must pass and
// sqlite's integrity check must say ok.
func TestRealClientsKilled(t *testing.T) {
	b, mnt, j := newDirs(t)
	m := mount(t, withBacking(b), withMnt(mnt), withJournal(j))
	top := t.TempDir()
	dest, home := filepath.Join(top, "dest"), filepath.Join(top, "home")
	for _, d := range []string{dest, home, filepath.Join(mnt, "work")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	env := append([]string{"HOME=" + home, "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1", "PATH=" + os.Getenv("PATH")},
		"GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@example.org", "GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@example.org")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	const kills = 4
	for k := 0; k < kills; k++ {
		stop := startLoop(t, mnt, env)
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		must(t, syscall.Kill(m.Pid, syscall.SIGKILL))
		m.unmounted = true // its cleanup must not try a clean unmount
		stop()
		waitDead(t, m.Pid)
		forceUnmount(t, mnt, 0)
		m = mount(t, withBacking(b), withMnt(mnt), withJournal(j))
		// A consumer round between the kills: what rsync copies now must
		// not hide what the next answers list.
		list, r := consume0(t, mnt, dest)
		rsyncOK(t, r, list)
		bless(t, mnt)
	}
	// After the last kill the programs must go on: more commits, more rows.
	commits, rows := clientProgress(t, mnt, env)
	stop := startLoop(t, mnt, env)
	time.Sleep(time.Second)
	stop()
	if c, r := clientProgress(t, mnt, env); c <= commits || r <= rows {
		t.Errorf("after %d kills git and sqlite3 made no progress: %d -> %d commits, %d -> %d rows", kills, commits, c, rows, r)
	}
	check := runIn(t, filepath.Join(mnt, "work"), env, "sh", "-c",
		"rm -f .git/index.lock && git fsck --strict 2>&1 && git status --porcelain && git rev-list --count HEAD && sqlite3 db 'select count(*) from t;' 'pragma integrity_check;'")
	if check.code != 0 || !strings.HasSuffix(check.stdout, "ok\n") {
		t.Errorf("after %d kills: %v", kills, check)
	}
	t.Logf("after %d kills: git fsck, then commits, rows and sqlite's check:\n%s", kills, check.stdout)
	lastCopyMatches(t, mnt, dest)
}

// clientProgress is the number of git commits and sqlite rows in the
// mount's work directory.
func clientProgress(t *testing.T, mnt string, env []string) (commits, rows int) {
	t.Helper()
	r := runIn(t, filepath.Join(mnt, "work"), env, "sh", "-c", "git rev-list --count HEAD && sqlite3 db 'select count(*) from t;'")
	if _, err := fmt.Sscan(r.stdout, &commits, &rows); r.code != 0 || err != nil {
		t.Fatalf("counting commits and rows: %v (%v)", r, err)
	}
	return commits, rows
}

// startLoop runs clientLoop in the mount; stop ends it.
func startLoop(t *testing.T, mnt string, env []string) (stop func()) {
	t.Helper()
	return startLoopScript(t, mnt, env, clientLoop, io.Discard)
}

// startLoopScript runs script with sh in dir, its output to out. The loop
// does not end by itself (its commands only fail while the mount is
// down): stop gives it 200 ms, then kills its process group, and waits.
// Cleanup stops it too, if the test ends first.
func startLoopScript(t *testing.T, dir string, env []string, script string, out io.Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = out, io.Discard
	must(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			select {
			case <-done:
			case <-time.After(200 * time.Millisecond):
				cancel()
				<-done
			}
			cancel()
		})
	}
	t.Cleanup(stop)
	return stop
}

// sqliteLoop commits sqlite3 transactions in WAL mode with synchronous
// FULL (a commit returns once the WAL is fsynced) and prints the mark of
// each commit that returned. RUN tells the loops apart. Each commit adds
// two rows and deletes the oldest.
const sqliteLoop = `
cd work
sqlite3 db 'create table if not exists t(k integer primary key, v text);' 'pragma journal_mode=wal;' >/dev/null
i=0
while :; do
	i=$((i + 1))
	sqlite3 db 'pragma synchronous=full;' "begin; insert into t(v) values ('$RUN-$i'), ('$RUN-$i b'); delete from t where k = (select min(k) from t); commit;" && echo "$RUN-$i"
done`

// TestRealClientsPowerCut: sqlite3 commits on the mount while the power
// of BACKING and JOURNAL is cut (XFS shutdown, as in TestCrashPower),
// three times, a consumer copying between the cuts. The last commit that
// sqlite3 reported before each cut must be in the database after it
// (hsmfs passes fsync through), its integrity check must say ok, and at
// the end the copy kept from the answers must equal the mount. (Tried by
// hand: with synchronous=off instead, the same cuts lost the last
// commits, and this test failed.)
func TestRealClientsPowerCut(t *testing.T) {
	bfs := newLoopFS(t, "xfs", 320<<20)
	jfs := newLoopFS(t, "xfs", 320<<20)
	b, j := filepath.Join(bfs.mp, "backing"), filepath.Join(jfs.mp, "journal")
	mnt, dest := filepath.Join(t.TempDir(), "mnt"), filepath.Join(t.TempDir(), "dest")
	for _, d := range []string{b, mnt, dest, filepath.Join(b, "work")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	m := mount(t, withBacking(b), withMnt(mnt), withJournal(j))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	const cuts = 3
	for c := 0; c < cuts; c++ {
		env := []string{"LC_ALL=C", "PATH=" + os.Getenv("PATH"), "RUN=" + string(rune('a'+c))}
		var out syncBuffer
		stop := startLoopScript(t, mnt, env, sqliteLoop, &out)
		for i := 0; !strings.Contains(out.String(), "\n"); i++ {
			if i > 1000 {
				t.Fatalf("cut %d: sqlite3 reported no commit in 10 s", c)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(300+rng.IntN(600)) * time.Millisecond)
		bfs.shutdown()
		jfs.shutdown()
		syscall.Kill(m.Pid, syscall.SIGKILL)
		m.unmounted = true
		stop()
		waitDead(t, m.Pid)
		forceUnmount(t, mnt, 0)
		bfs.unmount()
		jfs.unmount()
		bfs.mount()
		jfs.mount()
		m = mount(t, withBacking(b), withMnt(mnt), withJournal(j))
		marks := strings.Fields(out.String())
		last := marks[len(marks)-1]
		// The last commit's second row: the first may be the oldest row,
		// which the commit itself deletes.
		r := runIn(t, filepath.Join(mnt, "work"), env, "sqlite3", "db",
			"select count(*) from t where v = '"+last+" b';", "pragma integrity_check;")
		if r.code != 0 || r.stdout != "1\nok\n" {
			t.Errorf("cut %d: after %d commits that sqlite3 reported, the last (%s): %v", c, len(marks), last, r)
		} else {
			t.Logf("cut %d: %d commits reported, the last (%s) is in the database", c, len(marks), last)
		}
		list, res := consume0(t, mnt, dest)
		rsyncOK(t, res, list)
		bless(t, mnt)
	}
	lastCopyMatches(t, mnt, dest)
}

// lastCopyMatches makes the last copy once the clients are done and
// fails unless it equals the mount; then it blesses.
func lastCopyMatches(t *testing.T, mnt, dest string) {
	t.Helper()
	waitClosed(t, mnt)
	list, r := consume0(t, mnt, dest)
	rsyncOK(t, r, list)
	if !sameTree(t, "copy vs mount", snapshot(t, mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "mount", "copy") {
		t.Logf("the last answer (%d paths):\n  %s", len(list), strings.Join(list, "\n  "))
	}
	bless(t, mnt)
}
