package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hsmfs/hsmfs/tools/storm"
)

// runStorm: 4 writers make the rename storm (tools/storm) through one
// hsmfs mount, then one query answers it. The rows: the query's time,
// its lines, and how much the daemon's peak RSS grew while it ran. The
// workload "deepstorm" moves directories beneath any directory
// (storm.DeepOp), its rows are named deepstorm.*.
func runStorm(ctx context.Context, e *Env, res *Results, w *workload) error {
	op := storm.Op
	if w.name == "deepstorm" {
		op = storm.DeepOp
	}
	set := w.soloRep()
	t, done, err := e.soloHsmfs(ctx, w.name)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < e.sz.stormWorkers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(20261129, uint64(g)))
			for i := 0; i < e.sz.stormOps && ctx.Err() == nil; i++ {
				op(t.Mnt, rng)
			}
		}(g)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	ops := e.sz.stormWorkers * e.sz.stormOps
	set(w.name+".ops", float64(ops)/time.Since(start).Seconds())
	_, rssBefore, err := procMem(t.pid)
	if err != nil {
		return fmt.Errorf("daemon memory: %w", err)
	}
	lines, d, err := hsmQuery(t.Mnt)
	if err != nil {
		res.errors++
		for _, mm := range w.metrics[1:] {
			mm.fail("hsmfs", err.Error())
		}
		return err
	}
	hwm, _, err := procMem(t.pid)
	if err != nil {
		return fmt.Errorf("daemon memory: %w", err)
	}
	set(w.name+".query", d.Seconds())
	set(w.name+".lines", float64(lines))
	set(w.name+".rss", float64(max(hwm-rssBefore, 0))/(1<<20))
	fmt.Printf("  %s: %d operations by %d writers, query answered %d lines in %.2fs, daemon peak RSS grew %d MiB (VmRSS before %d MiB)\n",
		w.name, ops, e.sz.stormWorkers, lines, d.Seconds(), max(hwm-rssBefore, 0)>>20, rssBefore>>20)
	return nil
}
