package hsm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/internal/tier"
)

// gateTier wraps a tier; Open's reader hands out `first` bytes, then blocks
// until proceed is closed.
type gateTier struct {
	tier.Tier
	first   int64
	reached chan struct{}
	proceed chan struct{}
}

type gateReader struct {
	io.ReadCloser
	g    *gateTier
	n    int64
	shut bool
}

func (r *gateReader) Read(p []byte) (int, error) {
	if r.n >= r.g.first {
		if !r.shut {
			r.shut = true
			close(r.g.reached)
		}
		<-r.g.proceed
	} else if int64(len(p)) > r.g.first-r.n {
		p = p[:r.g.first-r.n]
	}
	k, err := r.ReadCloser.Read(p)
	r.n += int64(k)
	return k, err
}

func (g *gateTier) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	rc, size, err := g.Tier.Open(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	return &gateReader{ReadCloser: rc, g: g}, size, nil
}

// An O_TRUNC open does not wait for a restore in flight: the restore
// goes on writing the archived bytes into the truncated file, over what
// the truncating writer wrote.
func TestTruncatingOpenWaitsForRestore(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.write("f", 4<<20)
	p := filepath.Join(r.dir, "f")
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	real, err := r.m.tier(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := &gateTier{Tier: real, first: 1 << 20, reached: make(chan struct{}), proceed: make(chan struct{})}
	r.m.mu.Lock()
	r.m.tiers[1].t = g
	r.m.mu.Unlock()

	reader := make(chan error, 1)
	go func() { reader <- r.m.Opening(ctx, r.target("f"), false, false) }() // a reader starts the restore
	<-g.reached                                                             // 1 MiB restored, the rest is in flight

	// A writer opens with O_TRUNC (fs: Open → hsmOpening(trunc) →
	// truncate → Truncated): its Opening waits for the restore.
	wfd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wfd)
	wt := Target{Fd: wfd, Busy: func() (int32, int32) { return 2, 1 }}
	writer := make(chan error, 1)
	go func() { writer <- r.m.Opening(ctx, wt, true, true) }()
	select {
	case err := <-writer:
		t.Fatalf("a truncating open did not wait for the restore in flight (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.proceed) // the restore goes on, and ends
	if err := <-reader; err != nil {
		t.Fatal(err)
	}
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(wfd, 0)
	if err := r.m.Truncated(wt, nil); err != nil {
		t.Fatal(err)
	}
	want := []byte("the writer's new content\n")
	unix.Pwrite(wfd, want, 0)
	if err := r.m.Opening(ctx, r.target("f"), false, false); err != nil { // another reader
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, want) {
		t.Fatalf("after O_TRUNC + write during a restore: %d bytes (want %d); first bytes %q; state %v",
			len(got), len(want), got[:min(len(got), 32)], r.state("f").Flags)
	}
}

// Inode numbers and birth times say which file is which only within one
// file system: a file on a file system mounted inside BACKING has no HSM
// state (whose inode number and birth time could equal an archived
// file's, so that its open would restore another file's archive into
// it, or take the archived file for gone), and so its handle never
// reaches the sweep either.
func TestFilesOnAnotherFileSystemHaveNoState(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (mount)")
	}
	r := newRig(t)
	ctx := context.Background()
	a := filepath.Join(r.dir, "A")
	os.Mkdir(a, 0o755)
	if err := unix.Mount("none", a, "tmpfs", 0, ""); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { unix.Unmount(a, unix.MNT_DETACH) })
	data := r.write("f", 1<<20)
	os.WriteFile(filepath.Join(a, "x"), []byte("on tmpfs"), 0o644)
	if err := r.m.Archive(ctx, r.target("A/x"), 0); !errors.Is(err, ErrOtherFS) {
		t.Fatalf("archive of a file on a mount inside BACKING: %v, want ErrOtherFS", err)
	}
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	// An open of the other file system's file never meets f's state,
	// whatever its inode number.
	if err := r.m.Opening(ctx, r.target("A/x"), false, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(a, "x")); string(got) != "on tmpfs" {
		t.Fatalf("the file on the other file system holds %q", got)
	}
	if err := r.m.Opening(ctx, r.target("f"), false, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "f")); !bytes.Equal(got, data) {
		t.Fatal("f's content differs after its restore")
	}
}

// The sweep keeps a snapshot of entries; a stale one that lookup replaced
// meanwhile must not take the new file's row (f/INO) with it.
func TestStaleForgetKeepsTheNewRow(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	data := r.write("f", 64<<10)
	r.m.Archive(ctx, r.target("f"), 0)
	ino := r.state("f").Ino
	old := r.m.files[ino]
	old.mu.Lock()
	old.f.Btime++ // the row of a deleted file whose inode number f now holds
	old.mu.Unlock()
	// The new file is archived and released (lookup forgets old, entryFor makes a new entry).
	if err := r.m.Archive(ctx, r.target("f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	r.m.forget(old) // what sweep.go:69 does with its snapshot
	r.m.Close()
	r.open() // a crash: the next mount
	if f := r.state("f"); f.Flags&Released == 0 {
		got, _ := os.ReadFile(filepath.Join(r.dir, "f"))
		t.Fatalf("released file has no row after the stale forget: %v; content equal: %v", f.Flags, bytes.Equal(got, data))
	}
}

// Truncated's commit fails: the open fails, and the truncation stays
// pending; the file's size settles it, so the next reader's restore does
// not write the archive over what was written since.
func TestFailedTruncationCommitIsSettledBySize(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.write("f", 1<<20)
	p := filepath.Join(r.dir, "f")
	r.m.Archive(ctx, r.target("f"), 0)
	if err := r.m.Release(ctx, r.target("f")); err != nil {
		t.Fatal(err)
	}
	wfd, _ := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	defer unix.Close(wfd)
	wt := Target{Fd: wfd, Busy: func() (int32, int32) { return 1, 1 }}
	if err := r.m.Opening(ctx, wt, true, true); err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(wfd, 0)
	r.table.fail = unix.EIO // one failed journal write
	if err := r.m.Truncated(wt, nil); !errors.Is(err, unix.EIO) {
		t.Fatalf("Truncated with a failing journal: %v, want EIO (fs fails the open)", err)
	}
	r.table.fail = nil
	want := []byte("new\n")
	unix.Pwrite(wfd, want, 0)
	if err := r.m.Opening(ctx, r.target("f"), false, false); err != nil { // a reader
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Fatalf("writer's content replaced by the archive: %d bytes", len(got))
	}
}

type hangTier struct {
	tier.Tier
	hang chan struct{}
}

func (h *hangTier) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	<-h.hang // an S3 endpoint that does not answer (fs passes context.WithoutCancel)
	return h.Tier.Open(ctx, name)
}

// A release asks the tier without e.mu: status (Count, which takes
// Manager.mu and each entry's mu) and the opens of other files never wait
// for a tier that does not answer.
func TestReleaseDoesNotHoldTheEntryAcrossTheTier(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.write("f", 4096)
	r.write("g", 4096)
	r.m.Archive(ctx, r.target("f"), 0)
	r.m.Archive(ctx, r.target("g"), 0)
	real, _ := r.m.tier(ctx, 1)
	h := &hangTier{Tier: real, hang: make(chan struct{})}
	r.m.mu.Lock()
	r.m.tiers[1].t = h
	r.m.mu.Unlock()
	go r.m.Release(context.WithoutCancel(ctx), r.target("f"))
	time.Sleep(100 * time.Millisecond)
	go r.m.Count() // hsmfs status
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	tg := r.target("g")
	go func() { done <- r.m.Opening(ctx, tg, false, false) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		close(h.hang)
		t.Fatal("an open of another file (g) waited for a release of f stuck in the tier")
	}
	close(h.hang)
}
