package backing

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// A path that the caller does not need stat'ed is judged by its parent
// alone: a directory beneath the root makes it TypeUnstated, a parent that is
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
	b, err := Open(root)
	must(err)
	defer b.Close()
	paths := []string{"d", "d/f", "d/g", "l/f", "s/x", "z/y"}
	for _, needAll := range []bool{false, true} {
		got := make([]checkpoint.FileType, len(paths))
		b.LstatSorted(paths, func(int) bool { return needAll }, func(i int, typ checkpoint.FileType, ino uint64, nlink uint32) {
			got[i] = typ
		})
		want := []checkpoint.FileType{checkpoint.TypeUnstated, checkpoint.TypeUnstated, checkpoint.TypeUnstated,
			checkpoint.TypeShadowed, checkpoint.TypeShadowed, checkpoint.TypeGone}
		if needAll {
			want = []checkpoint.FileType{checkpoint.TypeDir, checkpoint.TypeFile, checkpoint.TypeGone,
				checkpoint.TypeShadowed, checkpoint.TypeShadowed, checkpoint.TypeGone}
		}
		for i := range paths {
			if got[i] != want[i] {
				t.Errorf("need=%v: %s is type %d, want %d", needAll, paths[i], got[i], want[i])
			}
		}
	}
}

// WalkDirs lists what Walk lists, in the same order, and gives each
// directory the inode that lstat gives it (the old names follow
// directories by inode, checkpoint/oldnames.go); it does not follow a
// symlink to a directory.
func TestWalkDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "a/b", "a/b/c", "e"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a/f", "a/b/c/g"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../e", filepath.Join(root, "a", "l")); err != nil {
		t.Fatal(err)
	}
	b, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var walked, dirs []string
	if err := b.Walk("a", func(p string) { walked = append(walked, p) }); err != nil {
		t.Fatal(err)
	}
	i := 0
	err = b.WalkDirs("a", func(p string, ino uint64, isDir bool) {
		if i >= len(walked) || walked[i] != p {
			t.Errorf("WalkDirs gave %s at %d, Walk %v", p, i, walked)
		}
		i++
		typ, want, _ := b.Lstat(p)
		if isDir != (typ == checkpoint.TypeDir) {
			t.Errorf("%s: isDir %v, lstat says %s", p, isDir, typ)
		}
		if isDir {
			dirs = append(dirs, p)
			if ino != want {
				t.Errorf("%s: inode %d, lstat %d", p, ino, want)
			}
		} else if ino != 0 {
			t.Errorf("%s: not a directory, inode %d", p, ino)
		}
	})
	if err != nil || i != len(walked) {
		t.Errorf("WalkDirs: %v after %d of %d paths", err, i, len(walked))
	}
	if len(dirs) != 2 {
		t.Errorf("directories %v, want a/b and a/b/c", dirs)
	}
}
