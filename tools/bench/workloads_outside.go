package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// runOutside: what the check at mount for changes made while hsmfs did
// not run costs. BACKING holds outsideFiles empty files in directories of
// 1,000. The delay of the check is the time of "hsmfs mount" with it
// minus the time with --no-outside-check, set against a plain lstat walk
// of the same tree, with warm caches and then with dropped ones (as
// root). Also: the tree index's bytes per entry, and the walk that a
// clean unmount makes.
func runOutside(ctx context.Context, e *Env, res *Results, w *workload) error {
	set := w.soloRep()
	back := filepath.Join(e.backFS, "outside")
	mnt := filepath.Join(e.work, "mnt-outside")
	jour := filepath.Join(e.jourFS, "outside-journal")
	defer func() {
		removeTree(back)
		removeTree(jour)
		for _, s := range []string{".tree", ".tree.log", ".log"} {
			os.Remove(jour + s)
		}
	}()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	n, err := makeFlatTree(back, e.sz.outsideFiles)
	if err != nil {
		return fmt.Errorf("outside: make the tree: %w", err)
	}
	o := &outsideRun{e: e, back: back, mnt: mnt, jour: jour}
	defer o.umount() // after a failure half-way
	// The first mount takes the index; the unmount takes it again.
	if _, err := o.cycle(); err != nil {
		return err
	}
	if st, err := os.Stat(jour + ".tree"); err == nil {
		set("outside.bytes", float64(st.Size())/float64(n))
	}
	for _, cold := range []bool{false, true} {
		if cold && os.Geteuid() != 0 {
			fmt.Println("  outside: not root, no cold-cache figures")
			break
		}
		walk, check, none, err := o.sample(cold)
		if err != nil {
			return err
		}
		suffix := map[bool]string{false: "warm", true: "cold"}[cold]
		set("outside.walk."+suffix, walk.Seconds())
		set("outside.delay."+suffix, (check - none).Seconds())
		set("outside.ratio."+suffix, (check-none).Seconds()/walk.Seconds())
		fmt.Printf("  outside (%s): %d entries; lstat walk %.2fs; mount with the check %.2fs, without %.2fs: delay %.2fs = %.2fx the walk\n",
			suffix, n, walk.Seconds(), check.Seconds(), none.Seconds(), (check - none).Seconds(), (check-none).Seconds()/walk.Seconds())
	}
	return nil
}

type outsideRun struct {
	e               *Env
	back, mnt, jour string
	mounted         bool
}

// sample times a lstat walk, a mount with the check (the index is the
// one of the last clean unmount) and a mount without it; each after
// dropping the caches when cold. It ends with a mount that takes the
// index again (the mount without the check removed it).
func (o *outsideRun) sample(cold bool) (walk, check, none time.Duration, err error) {
	drop := func() {
		if cold {
			if derr := dropCaches(); derr != nil {
				fmt.Println("  outside:", derr)
			}
		}
	}
	drop()
	start := time.Now()
	if _, err = lstatWalk(o.back); err != nil {
		return
	}
	walk = time.Since(start)
	drop()
	if check, err = o.cycle(); err != nil {
		return
	}
	drop()
	if none, err = o.cycle("--no-outside-check"); err != nil {
		return
	}
	_, err = o.cycle()
	return
}

// cycle mounts (timed) and unmounts.
func (o *outsideRun) cycle(args ...string) (time.Duration, error) {
	a := append([]string{"mount", "--journal", o.jour, "--log", o.jour + ".log"}, args...)
	a = append(a, o.back, o.mnt)
	start := time.Now()
	if out, err := exec.Command(o.e.cfg.hsmfsBin, a...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("hsmfs mount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	d := time.Since(start)
	o.mounted = true
	return d, o.umount()
}

func (o *outsideRun) umount() error {
	if !o.mounted {
		return nil
	}
	o.mounted = false
	if out, err := exec.Command(o.e.cfg.hsmfsBin, "umount", o.mnt).CombinedOutput(); err != nil {
		unmountPath(o.mnt, 5*time.Second)
		return fmt.Errorf("hsmfs umount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeFlatTree makes n empty files in directories of 1,000, on 8
// goroutines, and returns the entries made (files and directories).
func makeFlatTree(dir string, n int) (int, error) {
	dirs := (n + 999) / 1000
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for d := g; d < dirs; d += 8 {
				sub := filepath.Join(dir, fmt.Sprintf("d%d", d))
				if err := os.MkdirAll(sub, 0o755); err != nil {
					errs <- err
					return
				}
				for i := d * 1000; i < min(n, (d+1)*1000); i++ {
					if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return n + dirs, nil
}
