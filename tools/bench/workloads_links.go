package bench

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// runLinks: the cost of listing every name of a file with several links.
// BACKING holds linkFiles files in directories of 1,000, and every tenth
// has a second name in links/, all made before the mount. One write
// through one name, then the first query, which builds the index of
// multi-link inodes by a walk of BACKING; then a bless, another write
// and a query with the index built. The reference is a plain lstat walk
// of the same tree, made just before.
func runLinks(ctx context.Context, e *Env, res *Results, w *workload) error {
	set := w.soloRep()
	prepare := func(backing string) error { return makeLinkTree(backing, e.sz.linkFiles) }
	t, done, err := e.soloHsmfsWith(ctx, "links", prepare)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	n, err := lstatWalk(t.Backing)
	if err != nil {
		return err
	}
	walk := time.Since(start)
	set("links.walk", walk.Seconds())
	if _, _, err := hsmQuery(t.Mnt); err != nil {
		return err
	}
	if _, err := hsmBless(t.Mnt); err != nil {
		return err
	}
	for i, id := range []string{"links.first", "links.warm"} {
		if err := appendFile(filepath.Join(t.Mnt, "d0", "f0"), "more\n"); err != nil {
			return err
		}
		l, d, err := hsmQuery(t.Mnt)
		if err != nil {
			res.errors++
			return err
		}
		if l != 2 {
			return fmt.Errorf("links: the answer has %d lines, want 2 (d0/f0 and its other name)", l)
		}
		set(id, d.Seconds())
		if _, err := hsmBless(t.Mnt); err != nil {
			return err
		}
		fmt.Printf("  links: %d entries, lstat walk %.2fs; query %d (%s) %d lines in %.3fs\n",
			n, walk.Seconds(), i+1, id, l, d.Seconds())
	}
	return nil
}

// makeLinkTree makes n files in directories of 1,000, every tenth with a
// second name in links/.
func makeLinkTree(dir string, n int) error {
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		p := filepath.Join(d, fmt.Sprintf("f%d", i%1000))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
		if i%10 == 0 {
			if err := os.Link(p, filepath.Join(dir, "links", fmt.Sprintf("l%d", i))); err != nil {
				return err
			}
		}
	}
	return nil
}

// lstatWalk lstats every entry beneath dir and counts them.
func lstatWalk(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		n++
		return syscall.Lstat(p, &st)
	})
	return n, err
}

func appendFile(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
