package checkpoint

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The protocol checked on its own: a deterministic, seeded exploration of
// interleavings of writers, files open for writing, queries, checkpoints,
// blesses, injected journal and syncfs errors, and crashes (process kill
// and power cut), against a model consumer that loops
//
//	query -> copy every listed path from BACKING into DEST -> bless
//
// exactly as the contract's rsync command would. The invariant (Jan
// Kara's: "if file F was modified during period T, F is reported in T or
// a later period until a bless covers it") is checked in its consumer
// form: when a bless of query Q completes, every path on which DEST and
// BACKING differ must have changed (itself or an ancestor) after Q's
// answer was returned; and at the end of every schedule, after quiet
// final rounds, DEST == BACKING exactly.
//
// Determinism: the tracker's only blocking point is a query (or
// checkpoint) draining the earlier periods. The model knows exactly which
// modifications are in flight, so it runs Query in a goroutine, waits
// until it has either returned or switched the period (then it is
// certainly blocked on the in-flight modifications the model knows of),
// lets the scheduler go on (new modifications go to the new period), and
// waits for the query to return right after the last of those
// modifications ends. Nothing else runs concurrently with the scheduler,
// so a schedule is a pure function of its seed (or choice sequence). The
// completer (delayed completions) and the journal's committer (which
// writes queued fine records on its own) are steps of the schedule too.
//
// Crashes: a kill keeps every store write that returned and BACKING's
// page cache (still unsynced); a power cut keeps what was synced, and of
// BACKING the state of the last syncfs plus any subset of the later
// operations. A modification between Begin and its operation on BACKING
// is taken both ways (reached BACKING or not), as is a write through an
// open file after Touch. After a crash the tracker is mounted again on
// what survived, and the consumer starts its round again with a query.
//
// Schedules alternate between fine and coarse mode (AsyncStore), stores
// whose syncs do or do not flush earlier unsynced writes, and Backings
// with or without the optional List/LstatSorted.
//
// Tests: TestModel (everything), TestModelExhaustive (every choice
// sequence up to a small depth), TestModelCatches* (mutations that the
// model must catch), TestModelReplayIsDeterministic.
//
// Environment:
//
//	CHECKPOINT_MODEL_SEED       first seed (default 1); schedule i uses seed+i
//	CHECKPOINT_MODEL_SCHEDULES  number of random schedules of TestModel (default 2000)
//	CHECKPOINT_MODEL_STEPS      steps per schedule (default 60)
//	CHECKPOINT_MODEL_DEPTH      bound of the exhaustive exploration (default 3)
//	CHECKPOINT_MODEL_VERBOSE    1: log the trace of every schedule

// ---------------------------------------------------------------------
// drivers

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			return n
		}
	}
	return def
}

func envUint(name string, def uint64) uint64 {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err == nil {
			return n
		}
	}
	return def
}

type exploreResult struct {
	schedules int
	failed    *mworld
	seed      uint64
	stats     struct{ queries, blesses, crashes, steps int }
}

// explore runs n random schedules with seeds seed, seed+1, ... and stops
// at the first failure (of one of the kinds, or of any kind).
func explore(cfg modelCfg, seed uint64, n int, kinds ...failKind) exploreResult {
	var res exploreResult
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		w, err := newWorld(cfg.forSchedule(s), newRandChooser(s))
		if err != nil {
			panic(err)
		}
		w.runSchedule()
		res.schedules++
		res.stats.queries += w.queries
		res.stats.blesses += w.blesses
		res.stats.crashes += w.crashes
		if w.failed(kinds...) {
			res.failed, res.seed = w, s
			return res
		}
	}
	return res
}

func reportFailure(t *testing.T, test string, w *mworld, seed uint64, replay string) {
	t.Helper()
	var kinds []string
	for _, f := range w.fails {
		kinds = append(kinds, fmt.Sprintf("[%s] %s", f.kind, f.msg))
	}
	t.Errorf("model: schedule with seed %d (mode %s) fails:\n  %s\nreplay: %s\ntrace:\n%s",
		seed, w.cfg.mode(), strings.Join(kinds, "\n  "), replay, strings.Join(w.trace, "\n"))
}

var (
	sigNumbers = regexp.MustCompile(`[0-9]+`)
	sigLists   = regexp.MustCompile(`\[[^\]]*\]`)
	sigQuoted  = regexp.MustCompile(`"[^"]*"`)
)

// signature groups failures that are likely the same bug.
func signature(f mfail) string {
	msg := f.msg
	if i := strings.Index(msg, " on paths that did not change"); i >= 0 {
		msg = msg[:i]
	}
	msg = sigQuoted.ReplaceAllString(sigLists.ReplaceAllString(msg, "[..]"), `".."`)
	return string(f.kind) + ": " + sigNumbers.ReplaceAllString(msg, "N")
}

// runModel runs the random schedules of one model test. It does not stop
// at the first failure: it groups the failing schedules by the signatures
// of their failures and reports the first schedule of each group (with
// its trace and how to replay it; the first four in full).
func runModel(t *testing.T, name string, cfg modelCfg, defSchedules int) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	n := envInt("CHECKPOINT_MODEL_SCHEDULES", defSchedules)
	if testing.Short() && os.Getenv("CHECKPOINT_MODEL_SCHEDULES") == "" {
		n = max(n/4, 1)
	}
	cfg.steps = envInt("CHECKPOINT_MODEL_STEPS", cfg.steps)
	verbose := os.Getenv("CHECKPOINT_MODEL_VERBOSE") == "1"
	start := time.Now()
	res := exploreResult{}
	type group struct {
		count int
		seed  uint64
		w     *mworld
	}
	groups := make(map[string]*group)
	var order []string
	failed := 0
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		w, err := newWorld(cfg.forSchedule(s), newRandChooser(s))
		if err != nil {
			t.Fatal(err)
		}
		w.runSchedule()
		res.schedules++
		res.stats.queries += w.queries
		res.stats.blesses += w.blesses
		res.stats.crashes += w.crashes
		if verbose {
			t.Logf("seed %d:\n%s", s, strings.Join(w.trace, "\n"))
		}
		if w.failed() {
			failed++
			seen := make(map[string]bool)
			for _, f := range w.fails {
				// Fine and coarse mode fail for different reasons.
				sig := signature(f) + " [" + strings.SplitN(w.cfg.mode(), "+", 2)[0] + " mode]"
				if seen[sig] {
					continue
				}
				seen[sig] = true
				g := groups[sig]
				if g == nil {
					g = &group{seed: s, w: w}
					groups[sig] = g
					order = append(order, sig)
				}
				g.count++
			}
		}
	}
	for i, sig := range order {
		g := groups[sig]
		if i < 4 {
			reportFailure(t, name, g.w, g.seed, fmt.Sprintf(
				"CHECKPOINT_MODEL_SEED=%d CHECKPOINT_MODEL_SCHEDULES=1 CHECKPOINT_MODEL_STEPS=%d go test -race -run '^%s$' -v ./checkpoint/",
				g.seed, cfg.steps, name))
		}
	}
	if failed > 0 {
		var b strings.Builder
		for _, sig := range order {
			fmt.Fprintf(&b, "\n  %5d schedules (first: seed %d, mode %s): %s", groups[sig].count, groups[sig].seed, groups[sig].w.cfg.mode(), sig)
		}
		t.Errorf("model: %d of %d schedules failed; schedules by kind of failure:%s", failed, n, b.String())
	}
	t.Logf("model: %d schedules explored, seed %d (%d steps each; %d queries, %d blesses, %d crashes) in %v",
		res.schedules, seed, cfg.steps, res.stats.queries, res.stats.blesses, res.stats.crashes, time.Since(start).Round(time.Millisecond))
}

// TestModel explores the whole protocol: writers, renames (of
// directories too), files open for writing (with and without Touch, as
// mmap), queries, checkpoints, blesses, journal/syncfs errors, kills,
// power cuts and clean restarts.
func TestModel(t *testing.T) {
	runModel(t, "TestModel", defaultModelCfg(), 2000)
}

// TestModelNestedDirs is TestModel with directories made beneath
// directories too, so that the old names of a renamed directory go
// deeper than its immediate entries (checkpoint/oldnames.go).
func TestModelNestedDirs(t *testing.T) {
	cfg := defaultModelCfg()
	cfg.nestedDirs = true
	runModel(t, "TestModelNestedDirs", cfg, 1000)
}

// TestModelConsumers is TestModel with a second, named consumer on its
// own schedule and its own DEST, checked by the same invariant: D1-D5 per
// consumer. (D4 is off: a path that one consumer's query derives is
// listed to the other too.)
func TestModelConsumers(t *testing.T) {
	cfg := defaultModelCfg()
	cfg.named = true
	cfg.d4Checks = false
	runModel(t, "TestModelConsumers", cfg, 1500)
}

// TestModelExhaustive explores every choice sequence up to a small number
// of steps, on a small world.
func TestModelExhaustive(t *testing.T) {
	depth := envInt("CHECKPOINT_MODEL_DEPTH", 3)
	cfg := modelCfg{
		steps: depth, tops: []string{"a", "b"}, handles: true, kills: true, powerCuts: true,
		directChecks: true, d4Checks: true, inflightChecks: true, inflightAfterPowerCut: true,
	}
	start := time.Now()
	ch := &dfsChooser{}
	n := 0
	for {
		w, err := newWorld(cfg, ch)
		if err != nil {
			t.Fatal(err)
		}
		w.runSchedule()
		n++
		if w.failed() {
			reportFailure(t, "TestModelExhaustive", w, 0, "choice sequence "+ch.sequence()+
				fmt.Sprintf(" (CHECKPOINT_MODEL_DEPTH=%d)", depth))
			break
		}
		if !ch.next() {
			break
		}
		if n > 2_000_000 {
			t.Fatalf("exhaustive exploration too large")
		}
	}
	t.Logf("model: %d schedules explored exhaustively (depth %d), seed n/a, in %v", n, depth, time.Since(start).Round(time.Millisecond))
}

// The tests of the test: the model must catch real bugs. Each runs the
// same schedules without the mutation (they must pass) and with it (one
// must break the consumer invariant), with the direct answer checks off
// so that the consumer invariant alone has to find it.

// The mutations are caught by the consumer invariant alone: D4 checks
// and renames across periods of open files are off, so that what breaks
// is the copy, not a stricter check.
func mutationCfg() modelCfg {
	cfg := defaultModelCfg()
	cfg.d4Checks = false
	cfg.renameOpenFileAcross = false
	cfg.mixModes = false // fine mode, store without flush
	cfg.directChecks = false
	cfg.inflightChecks = false
	return cfg
}

// base, if not nil, changes the configuration of both runs.
func checkMutationCaught(t *testing.T, name string, base, mutate func(*modelCfg)) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	const budget = 3000
	cfg := mutationCfg()
	if base != nil {
		base(&cfg)
	}
	mcfg := cfg
	mutate(&mcfg)
	start := time.Now()
	res := explore(mcfg, seed, budget, failDest)
	if res.failed == nil {
		t.Fatalf("%s: the model did not notice the mutation in %d schedules (seed %d)", name, res.schedules, seed)
	}
	t.Logf("model: mutation %s caught after %d schedules, seed %d (failing seed %d) in %v: %s",
		name, res.schedules, seed, res.seed, time.Since(start).Round(time.Millisecond), res.failed.fails[0].msg)
	// The same schedules without the mutation pass.
	unmutated := explore(cfg, seed, res.schedules)
	if unmutated.failed != nil {
		reportFailure(t, name+" (baseline)", unmutated.failed, unmutated.seed, "")
	}
}

// TestModelCatchesAppendBeforeDurable: a store whose Append returns before
// the records are durable (lost at a power cut) must break the invariant.
func TestModelCatchesAppendBeforeDurable(t *testing.T) {
	checkMutationCaught(t, "lieAppend", nil, func(c *modelCfg) { c.store.lieAppend = true })
}

// TestModelCatchesBlessWithoutSyncfs: a Syncfs that makes nothing durable
// must break the invariant (a power cut after the bless undoes what the
// consumer copied, and nothing lists it any more).
func TestModelCatchesBlessWithoutSyncfs(t *testing.T) {
	checkMutationCaught(t, "noopSyncfs", nil, func(c *modelCfg) { c.noopSyncfs = true })
}

// TestModelCatchesRemovalOffRoster: in coarse mode, a removal of a
// name that its directory's roster does not hold (created after the
// roster, by a modification of the previous period still in flight or
// of this one) must be synced; covering it with the roster anyway must
// break the invariant.
func TestModelCatchesRemovalOffRoster(t *testing.T) {
	checkMutationCaught(t, "allOnRoster",
		func(c *modelCfg) { c.store.async = true },
		func(c *modelCfg) { c.mutAllOnRoster = true })
}

// TestModelReplayIsDeterministic runs some schedules twice and compares
// the traces: a failing seed must replay.
func TestModelReplayIsDeterministic(t *testing.T) {
	seed := envUint("CHECKPOINT_MODEL_SEED", 1)
	cfg := defaultModelCfg()
	for i := uint64(0); i < 20; i++ {
		var traces [2]string
		for k := range traces {
			w, err := newWorld(cfg.forSchedule(seed+i), newRandChooser(seed+i))
			if err != nil {
				t.Fatal(err)
			}
			w.runSchedule()
			traces[k] = strings.Join(w.trace, "\n")
		}
		if traces[0] != traces[1] {
			t.Fatalf("seed %d does not replay:\n--- first\n%s\n--- second\n%s", seed+i, traces[0], traces[1])
		}
	}
}
