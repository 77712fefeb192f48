package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/tools/storm"
)

// TestRenameStorm: writer processes rename files and whole directories,
// often onto names just vacated, exchange directories, make the old names
// again, link, append and remove (tools/storm), as build tools,
// package managers and mail stores do. Every round real rsync fed with
// the answer must make DEST equal the mount, and the answer must stay
// within lines <= FACTOR x (tree entries + operations) (the simple form
// of the bound of docs/design.md, "Old names"). make test runs 4 writers
// x 2,000 operations x 3 rounds, where mapping every listed path back
// through every rename gave 389,898 lines for 8,000 operations in round
// 1; make stormtest runs 4 x 20,000 x 2. HSMFS_STORM_WRITERS,
// HSMFS_STORM_OPS (per writer and round), HSMFS_STORM_ROUNDS,
// HSMFS_STORM_FACTOR and HSMFS_E2E_SEED size and replay it.
func TestRenameStorm(t *testing.T) { renameStorm(t, "shallow", envInt(t, "HSMFS_STORM_OPS", 2000)) }

// TestRenameStormDeep is TestRenameStorm with directories moved beneath
// any directory at any depth (storm.DeepOp): the tree grows 30 levels
// deep and more, where the path rule for old names multiplied the names
// of every level. Every round also checks that no query fell back from
// the inode rule (checkpoint/oldnames.go): there is no crash here.
// make test runs 4 x 1,500 operations x 3 rounds; make stormtest 4 x
// 20,000 x 2 (HSMFS_STORM_DEEP_OPS sizes it, per writer and round).
func TestRenameStormDeep(t *testing.T) {
	renameStorm(t, "deep", envInt(t, "HSMFS_STORM_DEEP_OPS", 1500))
}

func renameStorm(t *testing.T, kind string, ops int) {
	seed := uint64(envInt(t, "HSMFS_E2E_SEED", 20261129))
	writers := envInt(t, "HSMFS_STORM_WRITERS", 4)
	rounds := envInt(t, "HSMFS_STORM_ROUNDS", 3)
	factor := envInt(t, "HSMFS_STORM_FACTOR", 4)
	t.Logf("%s storm: seed %d, %d writer processes x %d operations x %d rounds", kind, seed, writers, ops, rounds)
	m := mount(t)
	dest := filepath.Join(t.TempDir(), "dest")
	must(t, os.Mkdir(dest, 0o755))
	for round := 1; round <= rounds; round++ {
		runStormWriters(t, m.Mnt, kind, seed, round, writers, ops)
		waitClosed(t, m.Mnt)
		snap := snapshot(t, m.Mnt, snapOpts{})
		entries, depth := len(snap)-1, 0
		for p := range snap {
			depth = max(depth, strings.Count(p, "/")+1)
		}
		logStart := fileSize(m.Log)
		start := time.Now()
		data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes"))
		must(t, err)
		took := time.Since(start)
		list := parsePlain(t, data)
		n := writers * ops
		st := status(t, m.Mnt)
		fallbacks, whole := st["old_name_fallbacks"], st["whole_answers"]
		t.Logf("round %d: %d operations, %d entries, depth %d, answer %d lines in %v, %v old-name fallbacks, %v whole answers",
			round, n, entries, depth, len(list), took.Round(time.Millisecond), fallbacks, whole)
		if fallbacks != 0.0 {
			t.Errorf("round %d: %v queries took the path rule for old names, in a run without crashes", round, fallbacks)
		}
		if whole != 0.0 {
			t.Errorf("round %d: %v answers said full rather than list their paths, in a run without crashes", round, whole)
		}
		logSlowQuery(t, m.Log, logStart)
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

// runStormWriters runs one round of the storm: writers processes at once
// beneath root, ops operations each, and fails if one of them did.
func runStormWriters(t *testing.T, root, kind string, seed uint64, round, writers, ops int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs[w] = runStormWriter(root, kind, seed, uint64(round*100+w), ops)
		}(w)
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("round %d: writer %d: %v", round, w, err)
		}
	}
}

// runStormWriter runs one writer of the storm as a process of its own:
// this test binary, running TestRenameStormWriter.
func runStormWriter(root, kind string, seed, stream uint64, ops int) error {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRenameStormWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HSMFS_STORM_CHILD="+root, "HSMFS_STORM_CHILD_KIND="+kind,
		fmt.Sprintf("HSMFS_STORM_CHILD_RNG=%d,%d,%d", seed, stream, ops))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// TestRenameStormWriter is one writer process of TestRenameStorm; run on
// its own, it does nothing.
func TestRenameStormWriter(t *testing.T) {
	root := os.Getenv("HSMFS_STORM_CHILD")
	if root == "" {
		t.Skip("a writer process of TestRenameStorm")
	}
	var seed, stream uint64
	var ops int
	if _, err := fmt.Sscanf(os.Getenv("HSMFS_STORM_CHILD_RNG"), "%d,%d,%d", &seed, &stream, &ops); err != nil {
		t.Fatalf("HSMFS_STORM_CHILD_RNG: %v", err)
	}
	rng := rand.New(rand.NewPCG(seed, stream))
	op := storm.Op
	if os.Getenv("HSMFS_STORM_CHILD_KIND") == "deep" {
		op = storm.DeepOp
	}
	for i := 0; i < ops; i++ {
		op(root, rng)
	}
}

// logSlowQuery shows the daemon's account of a slow query (its stages'
// times), if it wrote one after from.
func logSlowQuery(t *testing.T, log string, from int64) {
	data, err := os.ReadFile(log)
	if err != nil || int64(len(data)) <= from {
		return
	}
	for _, line := range strings.Split(string(data[from:]), "\n") {
		if strings.Contains(line, "slow query") {
			t.Logf("  daemon: %s", line)
		}
	}
}
