package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/journal"
	"github.com/hsmfs/hsmfs/tools/rate"
	"golang.org/x/sys/unix"
)

// --- intents ---

// createRate has writers goroutines create new empty files, each in its
// own directory (the kernel serialises creates within one directory), for
// dur or until max files; it returns files per second.
func createRate(ctx context.Context, dir string, writers int, dur time.Duration, max int) (float64, int64, error) {
	for w := 0; w < writers; w++ {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("w%02d", w)), 0o755); err != nil {
			return 0, 0, err
		}
	}
	r, n, err := rate.Run(ctx, writers, dur, max, func(w, i int) error {
		fd, err := unix.Open(fmt.Sprintf("%s/w%02d/f%06d", dir, w, i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	})
	if err != nil && ctx.Err() == nil {
		return 0, n, fmt.Errorf("create in %s: %w", dir, err)
	}
	return r, n, err
}

func intentsDir(e *Env, t *Target, rep int) string {
	return fmt.Sprintf("intents-%d", rep)
}

func sampleIntents(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	sz := e.sz
	if t.Name == "badger" {
		dir := filepath.Join(e.jourFS, fmt.Sprintf("badger-%d", rep))
		defer os.RemoveAll(dir)
		ref, err := journal.OpenReference(dir)
		if err != nil {
			return nil, err
		}
		defer ref.Close()
		r, _, err := rate.Run(ctx, sz.intentWriters, sz.intentDur, sz.intentMax, ref.Put)
		if err != nil {
			return nil, err
		}
		return map[string]float64{"intents": r}, nil
	}
	var syncs0 float64
	if t.Name == "hsmfs" {
		if st, err := hsmStatus(t.Mnt); err == nil {
			syncs0 = float64(st.JournalSyncs)
		}
	}
	unix.Sync()
	r, n, err := createRate(ctx, filepath.Join(t.Dir, intentsDir(e, t, rep)), sz.intentWriters, sz.intentDur, sz.intentMax)
	if err != nil {
		return nil, err
	}
	if t.Name == "hsmfs" && n > 0 {
		if st, err := hsmStatus(t.Mnt); err == nil && syncs0 >= 0 {
			syncs := float64(st.JournalSyncs) - syncs0
			fmt.Printf("  %-13s hsmfs: %d files, %.0f journal syncs (%.1f files per sync)\n", "", n, syncs, float64(n)/syncs)
			e.intentsPerSync = append(e.intentsPerSync, float64(n)/syncs)
		}
	}
	return map[string]float64{"intents": r}, nil
}

// afterIntents removes the files, untimed: through the mount (one
// goroutine per writer directory, so that it takes seconds, not tens of
// seconds), then settles hsmfs again so that the next sample starts with
// nothing pending. Nothing is changed beside a mount.
func afterIntents(e *Env, t *Target, rep int) error {
	if t.Name == "badger" {
		return nil
	}
	dir := filepath.Join(t.Dir, intentsDir(e, t, rep))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ents))
	for _, de := range ents {
		wg.Add(1)
		go func(d string) {
			defer wg.Done()
			errs <- os.RemoveAll(d)
		}(filepath.Join(dir, de.Name()))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return t.settle()
}

// --- pending paths ---

// runPending mounts a fresh hsmfs (its own BACKING and journal), creates
// the pending paths through it, then measures a query, a bless and the
// daemon's memory. Symlinks are the cheapest recorded path to make: one
// intent each, no data, and an inode but no data block on ext4.
// soloHsmfs mounts an hsmfs of its own, on a fresh BACKING and JOURNAL
// named after the workload; done unmounts it and removes both.
func (e *Env) soloHsmfs(ctx context.Context, name string) (*Target, func(), error) {
	return e.soloHsmfsWith(ctx, name, nil)
}

// soloHsmfsWith is soloHsmfs with BACKING filled by prepare before the
// mount.
func (e *Env) soloHsmfsWith(ctx context.Context, name string, prepare func(backing string) error) (*Target, func(), error) {
	t := &Target{Name: "hsmfs", Backing: filepath.Join(e.backFS, name), Mnt: filepath.Join(e.work, "mnt-"+name),
		Journal: filepath.Join(e.jourFS, name+"-journal"), env: e, heap: name == "pending"}
	t.Dir = t.Mnt
	for _, d := range []string{t.Backing, t.Mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	if prepare != nil {
		if err := prepare(t.Backing); err != nil {
			removeTree(t.Backing)
			return nil, nil, fmt.Errorf("%s: prepare BACKING: %w", name, err)
		}
	}
	if err := e.mountHsmfs(ctx, t); err != nil {
		return nil, nil, err
	}
	return t, func() {
		start := time.Now()
		t.unmount.run()
		removeTree(t.Backing)
		removeTree(t.Journal)
		fmt.Printf("  unmounted and removed the %s tree in %.1fs\n", name, time.Since(start).Seconds())
	}, nil
}

func runPending(ctx context.Context, e *Env, res *Results, w *workload) error {
	w.soloRep()
	m := w.metric
	t, done, err := e.soloHsmfs(ctx, "pending")
	if err != nil {
		return err
	}
	defer done()
	jBefore := dirBlocks(t.Journal)

	// 8 named consumers, registered before the paths: a query of one of
	// them scans the same records as the default's (pending.consumer).
	for i := 0; i < 8; i++ {
		if err := os.WriteFile(filepath.Join(t.Mnt, ".hsm", "ctl"), []byte(fmt.Sprintf("consumer add c%d\n", i)), 0); err != nil {
			return fmt.Errorf("pending: consumer add: %w", err)
		}
	}
	total := e.sz.pendingPaths
	n, dirs, el, firstErr := createPending(ctx, t.Mnt, total, e.sz.pendingWorkers, e.sz.pendingBudget, "pending")
	if err := ctx.Err(); err != nil {
		return err
	}
	rate := float64(n) / el.Seconds()
	m("pending.create").set("hsmfs", rate)
	if firstErr != nil {
		res.errors++
		for _, mm := range w.metrics {
			mm.fail("hsmfs", firstErr.Error())
		}
		return fmt.Errorf("creating pending paths: %w", firstErr)
	}
	incomplete := n < int64(total)
	if incomplete {
		msg := fmt.Sprintf("pending: only %d of %d paths were created within the %s budget; query/bless/RSS were measured with %d pending paths and are marked INCOMPLETE", n, total, e.sz.pendingBudget, n)
		res.Note(msg)
		fmt.Println("  " + msg)
		for _, mm := range w.metrics[1:] {
			mm.Incomplete = true
		}
	}
	if st, err := hsmStatus(t.Mnt); err == nil {
		fmt.Printf("  pending: status says pending_paths=%.0f journal_syncs=%.0f\n", float64(st.PendingPaths), float64(st.JournalSyncs))
	}
	hwmC, rssC, _ := procMem(t.pid)
	if prof := t.heapProfile("created"); prof != "" {
		if fuse, badger, own, err := heapSplit(prof); err == nil && n > 0 {
			m("pending.heap.own").set("hsmfs", float64(own)/float64(n))
			m("pending.heap.fuse").set("hsmfs", float64(fuse)/float64(n))
			fmt.Printf("  pending: heap in use after creating %d paths: hsmfs %d MiB (%.0f B/path), the inode table (go-fuse and hsmfs's nodes) %d MiB (%.0f B/path), badger %d MiB\n",
				n, own>>20, float64(own)/float64(n), fuse>>20, float64(fuse)/float64(n), badger>>20)
		} else if err != nil {
			fmt.Printf("  pending: heap profile: %v\n", err)
		}
	}

	// The peak RSS growth while the queries run: VmHWM is reset to VmRSS
	// first (clear_refs 5).
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", t.pid), []byte("5"), 0)
	_, rssBeforeQ, _ := procMem(t.pid)
	if err := pendingQueries(t, res, m, max(e.sz.queryReps, 3), n, dirs); err != nil {
		return err
	}
	hwmQ, rssQ, _ := procMem(t.pid)
	m("pending.query.rss").set("hsmfs", float64(max(hwmQ-rssBeforeQ, 0))/(1<<20))
	fmt.Printf("  pending: peak RSS grew %d MiB while the queries ran (VmRSS before %d MiB)\n", max(hwmQ-rssBeforeQ, 0)>>20, rssBeforeQ>>20)
	t.heapProfile("queried")
	// The named consumers go, so that the default's bless discards the
	// records (they would keep them for themselves).
	for i := 0; i < 8; i++ {
		if err := os.WriteFile(filepath.Join(t.Mnt, ".hsm", "ctl"), []byte(fmt.Sprintf("consumer rm c%d\n", i)), 0); err != nil {
			return fmt.Errorf("pending: consumer rm: %w", err)
		}
	}
	jFull := dirBlocks(t.Journal)
	d, err := hsmBless(t.Mnt)
	if err != nil {
		res.errors++
		m("pending.bless").fail("hsmfs", err.Error())
		return err
	}
	m("pending.bless").set("hsmfs", d.Seconds())
	jAfter, took := waitJournalShrinks(t.Journal, 2*jBefore, time.Minute)
	m("pending.journal").set("hsmfs", float64(jAfter)/float64(jBefore))
	fmt.Printf("  pending: journal on disk %d KiB before the paths, %d KiB with them, %d KiB %.0fs after the bless (%.2fx before)\n",
		jBefore>>10, jFull>>10, jAfter>>10, took.Seconds(), float64(jAfter)/float64(jBefore))
	hwm, rss, err := procMem(t.pid)
	if err != nil {
		res.errors++
		m("pending.rss").fail("hsmfs", err.Error())
		return fmt.Errorf("daemon memory: %w", err)
	}
	m("pending.rss").set("hsmfs", float64(hwm)/(1<<20))
	mem := fmt.Sprintf("daemon memory: after creating the paths VmRSS %d MiB (VmHWM %d MiB), after the queries VmRSS %d MiB, after the bless VmRSS %d MiB, peak VmHWM %d MiB",
		rssC>>20, hwmC>>20, rssQ>>20, rss>>20, hwm>>20)
	fmt.Printf("  pending: bless %.2fs; %s\n", d.Seconds(), mem)
	res.Note("pending: " + mem)
	return nil
}

// createPending makes up to total recorded paths through the mount mnt,
// as cheaply as a recorded path can be made: workers goroutines create
// directories of 1,000 symlinks each (one intent per path, no data), for
// at most budget. It reports progress every 10 s, and returns the paths
// made, the directories and the time taken.
func createPending(ctx context.Context, mnt string, total, workers int, budget time.Duration, label string) (int64, int, time.Duration, error) {
	const perDir = 1000
	dirs := (total + perDir - 1) / perDir
	var made atomic.Int64
	var firstErr error
	var once sync.Once
	var stop atomic.Bool
	deadline := time.Now().Add(budget)
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d := int(next.Add(1)) - 1
				if d >= dirs {
					return
				}
				dir := fmt.Sprintf("%s/d%04d", mnt, d)
				err := unix.Mkdir(dir, 0o755)
				for i := 0; err == nil && i < perDir && d*perDir+i < total; i++ {
					if i%64 == 0 && (stop.Load() || time.Now().After(deadline) || ctx.Err() != nil) {
						stop.Store(true)
						return
					}
					err = unix.Symlink("t", fmt.Sprintf("%s/s%04d", dir, i))
					if err == nil {
						made.Add(1)
					}
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
			}
		}()
	}
	ticker := time.NewTicker(10 * time.Second)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-ticker.C:
			n := made.Load()
			fmt.Printf("  %s: %d paths in %.0fs (%.0f/s)\n", label, n, time.Since(start).Seconds(), float64(n)/time.Since(start).Seconds())
		}
	}
	ticker.Stop()
	el := time.Since(start)
	n := made.Load()
	fmt.Printf("  %s: created %d symlinks in %d directories in %.1fs (%.0f paths/s)\n", label, n, dirs, el.Seconds(), float64(n)/el.Seconds())
	return n, dirs, el, firstErr
}

// pendingQueries times the default's query and a named consumer's, back
// to back, in alternating order, with a pause between for the collector
// that a big answer's release starts: the ratio is per repetition.
func pendingQueries(t *Target, res *Results, m func(string) *Metric, reps int, n int64, dirs int) error {
	qm, cm, rm := m("pending.query"), m("pending.consumer"), m("pending.consumer.ratio")
	for i := 0; i < reps; i++ {
		if i > 0 {
			for _, mm := range []*Metric{qm, cm, rm} {
				mm.newRep([]string{"hsmfs"})
			}
		}
		var dd, dc time.Duration
		var lines, clines int64
		for k := 0; k < 2; k++ {
			time.Sleep(time.Second)
			var err error
			if (k+i)%2 == 0 {
				lines, dd, err = hsmQuery(t.Mnt)
			} else {
				clines, dc, err = hsmQueryFor(t.Mnt, "c3")
			}
			if err != nil {
				res.errors++
				qm.fail("hsmfs", err.Error())
				return err
			}
		}
		qm.set("hsmfs", dd.Seconds())
		cm.set("hsmfs", dc.Seconds())
		rm.set("hsmfs", dc.Seconds()/dd.Seconds())
		fmt.Printf("  pending: query %d answered %d lines in %.2fs; consumer c3 (8 registered) %d lines in %.2fs\n",
			i+1, lines, dd.Seconds(), clines, dc.Seconds())
		if lines < n {
			res.Note(fmt.Sprintf("pending: the query answered %d lines, expected about %d", lines, n+int64(dirs)))
		}
	}
	return nil
}

// dirBlocks is the disk space that the files of dir take (st_blocks).
func dirBlocks(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
	}
	return n
}

// waitJournalShrinks polls the journal's space every 2 s until it is at
// most goal or limit has passed, and returns the last size and the time
// it took.
func waitJournalShrinks(dir string, goal int64, limit time.Duration) (int64, time.Duration) {
	start := time.Now()
	n := dirBlocks(dir)
	for n > goal && time.Since(start) < limit {
		time.Sleep(2 * time.Second)
		n = dirBlocks(dir)
	}
	return n, time.Since(start)
}
