package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/internal/storm"
)

// TestRenameStorm: writers rename files and whole directories, often
// onto names just vacated, exchange directories, make the old names
// again, link, append and remove (internal/storm), as build tools,
// package managers and mail stores do. Every round real rsync fed with
// the answer must make DEST equal the mount, and the answer must stay
// within lines <= FACTOR x (tree entries + operations). make test runs
// one writer with FACTOR 64, which catches the old names growing with
// the combinations of renames (4 million lines for 2,000 operations
// before the budget of checkpoint/renames.go). make stormtest runs the
// target of the bounded-answers issue, 4 writers and FACTOR 4, which is
// not met yet (docs/performance.md). HSMFS_STORM_WRITERS, HSMFS_STORM_OPS
// (per writer and round), HSMFS_STORM_ROUNDS, HSMFS_STORM_FACTOR and
// HSMFS_E2E_SEED size and replay it.
func TestRenameStorm(t *testing.T) {
	seed := uint64(envInt(t, "HSMFS_E2E_SEED", 20261129))
	writers := envInt(t, "HSMFS_STORM_WRITERS", 1)
	ops, rounds := envInt(t, "HSMFS_STORM_OPS", 2000), envInt(t, "HSMFS_STORM_ROUNDS", 3)
	factor := envInt(t, "HSMFS_STORM_FACTOR", 64)
	t.Logf("seed %d, %d writers x %d operations x %d rounds", seed, writers, ops, rounds)
	m := mount(t)
	dest := filepath.Join(t.TempDir(), "dest")
	must(t, os.Mkdir(dest, 0o755))
	for round := 1; round <= rounds; round++ {
		var wg sync.WaitGroup
		var done atomic.Int64
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(round*100+w)))
				for i := 0; i < ops; i++ {
					storm.Op(m.Mnt, rng)
					done.Add(1)
				}
			}(w)
		}
		wg.Wait()
		waitClosed(t, m.Mnt)
		entries := len(snapshot(t, m.Mnt, snapOpts{})) - 1
		start := time.Now()
		data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes"))
		must(t, err)
		took := time.Since(start)
		list := parsePlain(t, data)
		n := int(done.Load())
		t.Logf("round %d: %d operations, %d entries, answer %d lines in %v", round, n, entries, len(list), took.Round(time.Millisecond))
		if len(list) > factor*(entries+n) {
			t.Errorf("round %d: the answer has %d lines, over %d x (%d entries + %d operations) = %d",
				round, len(list), factor, entries, n, factor*(entries+n))
		}
		rsyncOK(t, rsyncList(t, m.Mnt, dest, list), list)
		bless(t, m.Mnt)
		if !sameTree(t, fmt.Sprintf("round %d", round), snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
			t.FailNow()
		}
	}
}
