package fs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// A path that the caller does not need stat'ed is judged by its parent
// alone: a directory beneath the root makes it Unstated, a parent that is
// a file (or a symlink) makes it shadowed (""), a missing one gone. The
// others get their own lstat.
func TestLstatSortedNeed(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(root, "d"), 0o755))
	must(os.WriteFile(filepath.Join(root, "d", "f"), nil, 0o644))
	must(os.WriteFile(filepath.Join(root, "s"), nil, 0o644))
	must(os.Symlink("d", filepath.Join(root, "l")))
	b, err := OpenBacking(root)
	must(err)
	defer b.Close()
	paths := []string{"d", "d/f", "d/g", "l/f", "s/x", "z/y"}
	for _, needAll := range []bool{false, true} {
		got := make([]string, len(paths))
		b.LstatSorted(paths, func(int) bool { return needAll }, func(i int, typ string, ino uint64, nlink uint32) {
			got[i] = typ
		})
		want := []string{checkpoint.Unstated, checkpoint.Unstated, checkpoint.Unstated, "", "", "gone"}
		if needAll {
			want = []string{"dir", "file", "gone", "", "", "gone"}
		}
		for i := range paths {
			if got[i] != want[i] {
				t.Errorf("need=%v: %s is %q, want %q", needAll, paths[i], got[i], want[i])
			}
		}
	}
}
