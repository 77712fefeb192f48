package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
		t.Logf("round %d: %d operations, %d entries, depth %d, answer %d lines in %v, %v old-name fallbacks, %v whole answers, %v capped",
			round, n, entries, depth, len(list), took.Round(time.Millisecond), fallbacks, whole, st["old_names_capped"])
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

// TestRenameStormDeepCrash: the deep storm on a file system of its own,
// then SIGKILL, a new mount and a query. The crash may have lost fine
// records, so the old names are found by path, the rule that once gave
// millions of lines on deep trees; the answer stays within the valve's
// 8 × (inodes + records) (docs/design.md, "The valve"), and real rsync
// makes the copy exact whether it says full or lists paths.
// HSMFS_STORM_CRASH_OPS sizes it (per writer; 1,000 in make test).
func TestRenameStormDeepCrash(t *testing.T) {
	seed := uint64(envInt(t, "HSMFS_E2E_SEED", 20261207))
	writers, ops := envInt(t, "HSMFS_STORM_WRITERS", 4), envInt(t, "HSMFS_STORM_CRASH_OPS", 1000)
	bfs := newLoopFS(t, "ext4", 256<<20)
	b := filepath.Join(bfs.mp, "backing")
	must(t, os.Mkdir(b, 0o755))
	m := mount(t, withBacking(b))
	dest := filepath.Join(t.TempDir(), "dest")
	syncOK(t, m, dest)
	runStormWriters(t, m.Mnt, "deep", seed, 1, writers, ops)
	waitClosed(t, m.Mnt)
	killDaemon(t, m)
	m2 := mount(t, withBacking(b), withMnt(m.Mnt), withJournal(m.Journal))

	var st syscall.Statfs_t
	must(t, syscall.Statfs(b, &st))
	inodes := int(st.Files - st.Ffree)
	logStart := fileSize(m2.Log)
	start := time.Now()
	data, err := os.ReadFile(filepath.Join(m2.Mnt, ".hsm", "changes.json"))
	must(t, err)
	took := time.Since(start)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var h struct {
		Query uint64
		Full  bool
	}
	must(t, json.Unmarshal([]byte(lines[0]), &h))
	s := status(t, m2.Mnt)
	t.Logf("after the kill: %d operations, %d inodes, answer %d paths in %v, %v old-name fallbacks, %v whole answers; header %s",
		writers*ops, inodes, len(lines)-1, took.Round(time.Millisecond), s["old_name_fallbacks"], s["whole_answers"], lines[0])
	logSlowQuery(t, m2.Log, logStart)
	// Records are at most a few per operation: 8 × (inodes + 4 × operations)
	// is over the valve's limit, and far below the millions of old.
	if limit := 8 * (inodes + 4*writers*ops); len(lines)-1 > limit {
		t.Errorf("the answer after the kill has %d paths, over %d", len(lines)-1, limit)
	}
	// Copy that answer as the contract says (the whole tree if it says
	// full), and bless it.
	bless := fmt.Sprintf("bless %d\n", h.Query)
	if h.Full {
		if r := run(t, nil, "rsync", "-a", "-I", "--delete", "--exclude=/.hsm", m2.Mnt+"/", dest+"/"); r.code != 0 && r.code != 24 {
			t.Fatalf("whole copy: %v", r)
		}
		bless = fmt.Sprintf("bless %d full\n", h.Query)
	} else {
		var list []string
		for _, l := range lines[1:] {
			var e struct {
				Path     string
				Shadowed bool
			}
			must(t, json.Unmarshal([]byte(l), &e))
			if !e.Shadowed {
				list = append(list, cmp.Or(e.Path, "."))
			}
		}
		rsyncOK(t, rsyncList(t, m2.Mnt, dest, list), list)
	}
	must(t, ctl(m2.Mnt, bless))
	sameTree(t, "after the kill", snapshot(t, m2.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
}
