package backing

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestDirCache(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b", "a/c"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	fa, err := b.Dir("a")
	if err != nil {
		t.Fatal(err)
	}
	fa2, _ := b.Dir("a")
	if fa2 != fa {
		t.Fatalf("second dir(a) = %d, want the cached %d", fa2, fa)
	}
	b.PutDir(fa)
	b.PutDir(fa2)
	if !isOpen(fa) {
		t.Fatal("a cached fd was closed by put")
	}

	// An invalidate while the fd is in use: it stays usable until put.
	fa, _ = b.Dir("a")
	b.dirs.invalidate()
	if !isOpen(fa) {
		t.Fatal("invalidate closed an fd in use")
	}
	b.PutDir(fa)
	if isOpen(fa) {
		t.Fatal("a dropped fd stayed open after its last put")
	}

	// The directory at a path changes: after invalidate, the new one.
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "b"), filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	b.dirs.invalidate()
	fa, _ = b.Dir("a")
	if err := unix.Faccessat(fa, "c", unix.F_OK, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		t.Fatal("dir(a) after invalidate is still the old directory")
	}
	b.PutDir(fa)

	// An open that began before an invalidate is not cached.
	_, gen, ok := b.dirs.get("x")
	if ok {
		t.Fatal("x cached before any open")
	}
	fx, err := b.openDir("x")
	if err != nil {
		t.Fatal(err)
	}
	b.dirs.invalidate()
	b.dirs.add("x", fx, gen)
	b.PutDir(fx)
	if isOpen(fx) {
		t.Fatal("an fd opened before an invalidate was cached")
	}

	// The cache stays bounded.
	var fds []int
	for i := 0; i < dirCacheMax+5; i++ {
		d := filepath.Join("x", "d"+string(rune('A'+i%26))+string(rune('a'+i/26)))
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := b.Dir(d)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		b.PutDir(fd)
	}
	b.dirs.mu.Lock()
	n, m := len(b.dirs.byPath), len(b.dirs.byFd)
	b.dirs.mu.Unlock()
	if n > dirCacheMax || m != n {
		t.Fatalf("cache holds %d paths and %d fds after %d directories, want <= %d and equal", n, m, len(fds), dirCacheMax)
	}
	for _, fd := range fds[:dirCacheMax-1] {
		if isOpen(fd) {
			// Dropped when the cache filled, closed at their put.
			t.Fatalf("fd %d of a dropped entry is still open", fd)
		}
	}
}
