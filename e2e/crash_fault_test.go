package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrashFault is fault injection: the journal's filesystem fills up
// (ENOSPC) or is shut down (EIO) while writers run. Every modification
// that needs a new intent must then fail, none that failed may reach
// BACKING, reads keep working, and once the fault is repaired the next
// query lists everything that succeeded.
func TestCrashFault(t *testing.T) {
	t.Run("enospc", func(t *testing.T) { faultTest(t, "ext4", "enospc") })
	t.Run("eio", func(t *testing.T) { faultTest(t, "xfs", "eio") })
}

// faultOp is one modification on its own target, so that its effect (or
// its absence) can be checked in BACKING.
type faultOp struct {
	kind    string
	path    string // the name it creates or changes
	path2   string // rename target
	started time.Time
	err     error
	died    bool // failed because the daemon died, after reaching BACKING
}

func faultTest(t *testing.T, fstype, fault string) {
	jfs := newLoopFS(t, fstype, 320<<20)
	journal := filepath.Join(jfs.mp, "journal")
	b, mnt, _ := newDirs(t)
	logf := filepath.Join(t.TempDir(), "hsmfs.log")
	mountIt := func() *hsmMount {
		return mount(t, withBacking(b), withMnt(mnt), withJournal(journal), withArgs("--log", logf))
	}
	m := mountIt()

	// Targets that exist before the fault, blessed.
	const per = 300
	must(t, os.Mkdir(filepath.Join(mnt, "pre"), 0o755))
	for i := 0; i < per; i++ {
		for _, k := range []string{"u", "r", "c", "w"} {
			must(t, os.WriteFile(filepath.Join(mnt, "pre", fmt.Sprintf("%s%d", k, i)), []byte("before"), 0o644))
		}
		must(t, os.Mkdir(filepath.Join(mnt, "pre", fmt.Sprintf("d%d", i)), 0o755))
	}
	query(t, mnt)
	bless(t, mnt)
	query(t, mnt) // a fresh period: every first modification needs a new intent

	var (
		ops      []*faultOp
		opsMu    sync.Mutex
		faultAt  atomic.Int64 // unix nanos when the fault was in place
		next     atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		pre      = func(k string, i int64) string { return filepath.Join("pre", fmt.Sprintf("%s%d", k, i)) }
		abs      = func(p string) string { return filepath.Join(mnt, p) }
		writerFn = func() {
			defer wg.Done()
			for !stop.Load() {
				i := next.Add(1)
				if i/6 >= per {
					return // each target is used once
				}
				var op *faultOp
				switch i % 6 {
				case 0:
					op = &faultOp{kind: "create", path: fmt.Sprintf("new%d", i)}
					op.started = time.Now()
					op.err = os.WriteFile(abs(op.path), []byte("x"), 0o644)
				case 1:
					// A file in a directory that existed before the
					// period (and is not new beneath an ancestor's
					// census) needs a directory intent of
					// its own: nothing durable covers it.
					op = &faultOp{kind: "create", path: filepath.Join(pre("d", i/6), "f")}
					op.started = time.Now()
					op.err = os.WriteFile(abs(op.path), []byte("x"), 0o644)
				case 2:
					op = &faultOp{kind: "unlink", path: pre("u", i/6)}
					op.started = time.Now()
					op.err = os.Remove(abs(op.path))
				case 3:
					op = &faultOp{kind: "rename", path: pre("r", i/6), path2: fmt.Sprintf("moved%d", i)}
					op.started = time.Now()
					op.err = os.Rename(abs(op.path), abs(op.path2))
				case 4:
					op = &faultOp{kind: "chmod", path: pre("c", i/6)}
					op.started = time.Now()
					op.err = os.Chmod(abs(op.path), 0o600)
				case 5:
					op = &faultOp{kind: "write", path: pre("w", i/6)}
					op.started = time.Now()
					op.err = os.WriteFile(abs(op.path), []byte("after"), 0o644)
				}
				opsMu.Lock()
				ops = append(ops, op)
				opsMu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}
	)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go writerFn()
	}
	time.Sleep(100 * time.Millisecond)

	var filler string
	switch fault {
	case "enospc":
		// Below the journal's 64 MiB reserve: it refuses to write.
		filler = jfs.fill(16 << 20)
	case "eio":
		jfs.shutdown()
	}
	faultAt.Store(time.Now().UnixNano())
	time.Sleep(400 * time.Millisecond)

	// Reads keep working during the fault (unless the daemon died of it,
	// which EIO on its mmap'd log can cause: then nothing is served, and
	// nothing is modified either).
	if _, err := os.ReadFile(abs(pre("c", 0))); err != nil && fault == "enospc" {
		t.Errorf("read during the fault: %v", err)
	}
	if _, err := os.ReadDir(abs("pre")); err != nil && fault == "enospc" {
		t.Errorf("readdir during the fault: %v", err)
	}
	stop.Store(true)
	wg.Wait()

	// Judge every operation that started with the fault in place.
	var during, failed, leaked, died int
	for _, op := range ops {
		if op.started.UnixNano() < faultAt.Load() {
			continue
		}
		during++
		if op.err == nil {
			continue
		}
		failed++
		if errors.Is(op.err, syscall.ECONNABORTED) || errors.Is(op.err, syscall.ENOTCONN) {
			// The daemon died of the fault (SIGBUS on badger's mmap'd
			// log): like a kill, what it had begun had a durable
			// intent, and may have reached BACKING. It must be listed
			// after the repair (below).
			died++
			op.died = reached(t, b, op)
			continue
		}
		if reached(t, b, op) {
			leaked++
			t.Errorf("%s %s failed (%v) but reached BACKING", op.kind, op.path, op.err)
		}
	}
	t.Logf("fault %s: %d modifications attempted during the fault, %d failed, %d reached BACKING anyway",
		fault, during, failed, leaked)
	if died > 0 {
		t.Logf("fault %s: the daemon died of the fault (SIGBUS on badger's mmap'd log, see docs/usage.md); %d operations failed with ENOTCONN/ECONNABORTED", fault, died)
	}
	if during == 0 || failed == 0 {
		t.Errorf("the fault failed no modification (%d attempted)", during)
	}

	// Repair, then nothing that succeeded may be missing.
	switch fault {
	case "enospc":
		must(t, os.Remove(filler))
		if err := os.WriteFile(abs("after-repair"), []byte("ok"), 0o644); err != nil {
			t.Fatalf("a modification after the repair: %v", err)
		}
	case "eio":
		m.unmounted = true
		forceUnmount(t, mnt, m.Pid)
		jfs.unmount()
		jfs.mount()
		m = mountIt()
	}
	listed := map[string]bool{}
	for _, p := range query(t, mnt).Paths() {
		listed[p] = true
	}
	missing := 0
	for _, op := range ops {
		if op.err != nil && !op.died {
			continue
		}
		for _, p := range []string{op.path, op.path2} {
			if p != "" && !listed[p] {
				missing++
				t.Errorf("%s %s succeeded but the query after the repair does not list %s", op.kind, op.path, p)
			}
		}
	}
	t.Logf("fault %s: after the repair %d paths listed, %d successful modifications missing", fault, len(listed), missing)
}

// reached reports whether a failed operation's effect is in BACKING.
func reached(t *testing.T, backing string, op *faultOp) bool {
	p := filepath.Join(backing, op.path)
	switch op.kind {
	case "create":
		_, err := os.Lstat(p)
		return err == nil
	case "unlink":
		_, err := os.Lstat(p)
		return os.IsNotExist(err)
	case "rename":
		_, err := os.Lstat(filepath.Join(backing, op.path2))
		return err == nil
	case "chmod":
		var st syscall.Stat_t
		return syscall.Lstat(p, &st) == nil && st.Mode&0o777 == 0o600
	case "write":
		data, _ := os.ReadFile(p)
		return string(data) != "before"
	}
	return false
}
