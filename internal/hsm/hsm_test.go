package hsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memTable is a Store in memory that a test can "crash": what PutRows
// returned from is what a new Manager loads.
type memTable struct {
	mu   sync.Mutex
	rows map[string][]byte
	puts int
	fail error
}

func newMemTable() *memTable { return &memTable{rows: map[string][]byte{}} }

func (t *memTable) PutRows(rows []Row) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fail != nil {
		return t.fail
	}
	t.puts++
	for _, r := range rows {
		if r.Value == nil {
			delete(t.rows, r.Name)
		} else {
			t.rows[r.Name] = bytes.Clone(r.Value)
		}
	}
	return nil
}

func (t *memTable) ScanRows(fn func(string, []byte) error) error {
	t.mu.Lock()
	names := make([]string, 0, len(t.rows))
	for n := range t.rows {
		names = append(names, n)
	}
	sort.Strings(names)
	vals := make([][]byte, len(names))
	for i, n := range names {
		vals[i] = t.rows[n]
	}
	t.mu.Unlock()
	for i, n := range names {
		if err := fn(n, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// rig is a manager over a directory tier, acting on real files.
type rig struct {
	t     *testing.T
	dir   string // the files
	tier  string // the tier's directory
	table *memTable
	m     *Manager
}

func newRig(t *testing.T) *rig {
	base := t.TempDir()
	r := &rig{t: t, dir: filepath.Join(base, "files"), tier: filepath.Join(base, "tier"), table: newMemTable()}
	os.Mkdir(r.dir, 0o755)
	os.Mkdir(r.tier, 0o755)
	r.open()
	if err := r.m.AddTier(context.Background(), 1, "dir://"+r.tier); err != nil {
		t.Fatal(err)
	}
	return r
}

// open starts a manager on the table, as a mount after a crash would.
func (r *rig) open() {
	var st unix.Stat_t
	if err := unix.Stat(r.dir, &st); err != nil {
		r.t.Fatal(err)
	}
	m, err := New(r.table, Options{RestoreTimeout: 10 * time.Second, Dev: st.Dev})
	if err != nil {
		r.t.Fatal(err)
	}
	r.m = m
	r.t.Cleanup(m.Close)
}

func (r *rig) write(name string, size int) []byte {
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(r.dir, name), data, 0o644); err != nil {
		r.t.Fatal(err)
	}
	return data
}

// target opens name and returns it as a Target (closed at cleanup);
// opens counts the handles that Busy reports.
func (r *rig) target(name string, opens ...int32) Target {
	fd, err := unix.Open(filepath.Join(r.dir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { unix.Close(fd) })
	var o int32
	if len(opens) > 0 {
		o = opens[0]
	}
	return Target{Fd: fd, Busy: func() (int32, int32) { return o, 0 }}
}

func (r *rig) state(name string) File {
	f, err := r.m.State(r.target(name))
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

func (r *rig) objects() []string {
	ents, _ := os.ReadDir(r.tier)
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func blocks(t *testing.T, p string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestArchiveReleaseRestore(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	data := r.write("f", 3<<20+17)
	p := filepath.Join(r.dir, "f")
	var before unix.Stat_t
	unix.Stat(p, &before)

	if err := r.m.Release(ctx, r.target("f")); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("release before archive: %v, want ErrNotArchived", err)
	}
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	if f := r.state("f"); f.Flags != Archived || f.Size != int64(len(data)) || len(r.objects()) != 1 {
		t.Fatalf("after archive: %+v, objects %v", f, r.objects())
	}
	if err := r.m.Release(ctx, r.target("f", 1)); !errors.Is(err, ErrBusy) {
		t.Fatalf("release of an open file: %v, want ErrBusy", err)
	}
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	var after unix.Stat_t
	unix.Stat(p, &after)
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Blocks > 8 {
		t.Fatalf("released: size %d mtime %v blocks %d; want size %d mtime %v, no blocks", after.Size, after.Mtim, after.Blocks, before.Size, before.Mtim)
	}
	if f := r.state("f"); f.Flags != Archived|Released {
		t.Fatalf("after release: %v", f.Flags)
	}
	if err := r.m.Remove(ctx, r.target("f")); !errors.Is(err, ErrReleased) {
		t.Fatalf("remove of a released file: %v, want ErrReleased", err)
	}
	// Many opens at once: one restore, every one sees the content.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.m.Opening(ctx, r.target("f"), false, false)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, data) {
		t.Fatal("restored content differs")
	}
	unix.Stat(p, &after)
	if after.Mtim != before.Mtim {
		t.Fatalf("restore moved mtime: %v, want %v", after.Mtim, before.Mtim)
	}
	if f := r.state("f"); f.Flags != Archived {
		t.Fatalf("after restore: %v", f.Flags)
	}
	// An open for writing makes it dirty; dirty is never released.
	if err := r.m.Opening(ctx, r.target("f"), true, false); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Release(ctx, r.target("f")); !errors.Is(err, ErrDirty) {
		t.Fatalf("release of a dirty file: %v, want ErrDirty", err)
	}
	// Archived again: a new object, and the old one collected.
	old := r.objects()
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { o := r.objects(); return len(o) == 1 && o[0] != old[0] })
	if err := r.m.Remove(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	if f := r.state("f"); f.Flags != 0 || len(r.objects()) != 0 {
		t.Fatalf("after remove: %v, objects %v", f.Flags, r.objects())
	}
}

func TestTruncatedReleasedFileIsNotRestored(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.write("f", 1<<20)
	r.m.Archive(ctx, r.target("f"), 0)
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(r.tier) // a restore would fail now
	tg := r.target("f")
	if err := r.m.Opening(ctx, tg, true, true); err != nil {
		t.Fatalf("O_TRUNC open of a released file: %v", err)
	}
	if f := r.state("f"); f.Flags != Archived|Released|Dirty {
		t.Fatalf("before the truncation: %v, want archived released dirty", f.Flags)
	}
	os.Truncate(filepath.Join(r.dir, "f"), 0)
	if err := r.m.Truncated(tg, nil); err != nil {
		t.Fatal(err)
	}
	if f := r.state("f"); f.Flags != Archived|Dirty {
		t.Fatalf("after the truncation: %v, want archived dirty", f.Flags)
	}
}

func TestArchiveOfAFileChangedMeanwhileDoesNotCommit(t *testing.T) {
	r := newRig(t)
	r.write("f", 8<<20)
	tg := r.target("f")
	slow := &slowTier{opened: make(chan struct{}), proceed: make(chan struct{})}
	r.m.opt.OpenTier = func(ctx context.Context, url string) (tierT, error) { return slow, nil }
	r.m.mu.Lock()
	r.m.tiers[1].t = slow
	r.m.mu.Unlock()
	done := make(chan error)
	go func() { done <- r.m.Archive(context.Background(), tg, 1) }()
	<-slow.opened
	if err := r.m.Opening(context.Background(), r.target("f"), true, false); err != nil {
		t.Fatal(err)
	}
	close(slow.proceed)
	if err := <-done; !errors.Is(err, ErrChanged) {
		t.Fatalf("archive during an open for writing: %v, want ErrChanged", err)
	}
	if f := r.state("f"); f.Flags&Archived != 0 || f.Pending != nil {
		t.Fatalf("state: %+v", f)
	}
	waitFor(t, func() bool { return slow.removed.Load() == 1 && !hasOrphans(r.table) })
}

// TestRecovery: each transition's begin record left by a crash is
// finished or undone by the next manager.
func TestRecovery(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	data := r.write("f", 1<<20)
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	crashWith := func(p *Pending, flags Flags) {
		t.Helper()
		r.m.Close()
		name := fileRowName(r.state("f").Ino)
		var f File
		json.Unmarshal(r.table.rows[name], &f)
		f.Pending, f.Flags = p, flags
		r.table.rows[name], _ = json.Marshal(f)
		r.open()
	}
	// An archive that never committed: its object is collected, the
	// earlier archive stays.
	os.WriteFile(filepath.Join(r.tier, "partial"), []byte("x"), 0o600)
	crashWith(&Pending{Op: OpArchive, Tier: 1, Object: "partial"}, Archived)
	waitFor(t, func() bool { return len(r.objects()) == 1 })
	if f := r.state("f"); f.Flags != Archived || f.Pending != nil {
		t.Fatalf("after a crashed archive: %+v", f)
	}
	// A release cut in the middle (half the blocks freed): released.
	unix.Fallocate(int(mustOpen(t, filepath.Join(r.dir, "f"))), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<19)
	crashWith(&Pending{Op: OpRelease}, Archived)
	if f := r.state("f"); f.Flags != Archived|Released {
		t.Fatalf("after a crashed release: %v", f.Flags)
	}
	// A restore cut in the middle: still released, and restorable.
	crashWith(&Pending{Op: OpRestore}, Archived|Released)
	if f := r.state("f"); f.Flags != Archived|Released {
		t.Fatalf("after a crashed restore: %v", f.Flags)
	}
	if err := r.m.Restore(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "f")); !bytes.Equal(got, data) {
		t.Fatal("content after recovery and restore differs")
	}
	// A remove cut in the middle: not archived, object collected.
	crashWith(&Pending{Op: OpRemove}, Archived)
	waitFor(t, func() bool { return len(r.objects()) == 0 })
	if f := r.state("f"); f.Flags != 0 {
		t.Fatalf("after a crashed remove: %v", f.Flags)
	}
}

// TestJournalFailureChangesNothing: a table that cannot be written fails
// the transition before the file or the tier is touched.
func TestJournalFailureChangesNothing(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.write("f", 1<<20)
	r.m.Archive(ctx, r.target("f"), 0)
	p := filepath.Join(r.dir, "f")
	b := blocks(t, p)
	r.table.fail = unix.EIO
	if err := r.m.Release(ctx, r.target("f")); !errors.Is(err, unix.EIO) {
		t.Fatalf("release with a failing journal: %v, want EIO", err)
	}
	if blocks(t, p) != b {
		t.Fatal("a release whose begin record failed freed blocks")
	}
	if err := r.m.Opening(ctx, r.target("f"), true, false); !errors.Is(err, unix.EIO) {
		t.Fatalf("open for writing with a failing journal: %v, want EIO", err)
	}
}

func TestStaleEntryIsForgotten(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.write("f", 4096)
	r.m.Archive(ctx, r.target("f"), 0)
	r.m.Close()
	// Another file now holds the inode number (as after a delete and a
	// reuse): a different birth time.
	for name, v := range r.table.rows {
		if strings.HasPrefix(name, rowFile) {
			var f File
			json.Unmarshal(v, &f)
			f.Btime++
			r.table.rows[name], _ = json.Marshal(f)
		}
	}
	r.open()
	if f := r.state("f"); f.Flags != 0 {
		t.Fatalf("stale state applied: %v", f.Flags)
	}
	waitFor(t, func() bool { return len(r.objects()) == 0 && r.table.len() == 1 }) // the tier row
}

func mustOpen(t *testing.T, p string) uintptr {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f.Fd()
}

func (t *memTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rows)
}

func hasOrphans(t *memTable) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for n := range t.rows {
		if strings.HasPrefix(n, rowOrphan) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
