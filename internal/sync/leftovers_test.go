package sync

import (
	"os"
	"path/filepath"
	"testing"
)

// After a failed round, rsync's temporaries of listed names go from DEST;
// anything else stays: a temporary-looking name that the mount holds, one
// of a name that was not listed, and a directory.
func TestRemoveLeftovers(t *testing.T) {
	src, dest := t.TempDir(), t.TempDir()
	write := func(root, rel string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"f6", "d/g", ".held.Ab12Cd", "s/h", ".hsm/status"} {
		write(src, p)
	}
	// s is a directory in the mount, and a symlink in DEST (to a
	// directory outside it, where rsync left nothing).
	outside := t.TempDir()
	write(outside, ".h.Zz9Yy8")
	if err := os.Symlink(outside, filepath.Join(dest, "s")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".f6.8zrgOF", "d/.g.x1Y2z3", ".held.Ab12Cd", ".other.Ab12Cd", "d/.g.toolong1"} {
		write(dest, p)
	}
	if err := os.Mkdir(filepath.Join(dest, "d", ".g.Dir123"), 0o755); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte("f6\x00d/g\x00held\x00gone/x\x00s/h\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := removeLeftovers(list, src+"/", dest+"/")
	if err != nil || n != 2 {
		t.Fatalf("removeLeftovers = %d, %v; want 2 removed", n, err)
	}
	for _, p := range []string{".f6.8zrgOF", "d/.g.x1Y2z3"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err == nil {
			t.Errorf("%s is still in DEST", p)
		}
	}
	for _, p := range []string{".held.Ab12Cd", ".other.Ab12Cd", "d/.g.toolong1", "d/.g.Dir123"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(outside, ".h.Zz9Yy8")); err != nil {
		t.Errorf("a file beyond a symlink in DEST was removed: %v", err)
	}
	// A bare mountpoint (the mount is gone): nothing is removed.
	write(dest, ".f6.Qq1Ww2")
	if n, err := removeLeftovers(list, t.TempDir(), dest); err == nil || n != 0 {
		t.Errorf("without the mount: removeLeftovers = %d, %v; want 0 and an error", n, err)
	}
	if _, err := os.Lstat(filepath.Join(dest, ".f6.Qq1Ww2")); err != nil {
		t.Errorf("without the mount, %s was removed", ".f6.Qq1Ww2")
	}
}
