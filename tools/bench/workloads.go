package bench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// sizes are the workload parameters of a full or a short run.
type sizes struct {
	short          bool
	seqBytes       int64
	metaFiles      int // in total, for the serial and the parallel runs
	parWorkers     int
	buildSubset    bool // short: only the packages the build needs
	intentDur      time.Duration
	intentWriters  int
	intentMax      int // per sample, to bound the cleanup
	pendingPaths   int
	pendingWorkers int
	pendingBudget  time.Duration // for creating the pending paths
	stormWorkers   int
	stormOps       int // per writer
	linkFiles      int
	outsideFiles   int
	cacheFiles     int // the cache workload's checkout
	makeTargets    int
	queryReps      int
	budget         map[string]time.Duration // per workload, see runWorkload
}

func sizesFor(short bool) sizes {
	if short {
		return sizes{
			short: true, seqBytes: 256 << 20, metaFiles: 1000, parWorkers: 4, buildSubset: true,
			intentDur: time.Second, intentWriters: 16, intentMax: 16000,
			pendingPaths: 100_000, pendingWorkers: 32, pendingBudget: 20 * time.Second, queryReps: 1,
			stormWorkers: 4, stormOps: 2000, linkFiles: 50_000, outsideFiles: 100_000,
			cacheFiles: 10_000, makeTargets: 1000,
			budget: map[string]time.Duration{
				"seqwrite": 6 * time.Second, "seqread": 6 * time.Second, "meta-serial": 8 * time.Second,
				"meta-parallel": 8 * time.Second, "build": 15 * time.Second, "intents": 12 * time.Second,
			},
		}
	}
	return sizes{
		seqBytes: 1 << 30, metaFiles: 4000, parWorkers: 4,
		intentDur: 2 * time.Second, intentWriters: 16, intentMax: 64000,
		pendingPaths: 1_000_000, pendingWorkers: 32, pendingBudget: 150 * time.Second, queryReps: 3,
		stormWorkers: 4, stormOps: 20_000, linkFiles: 500_000, outsideFiles: 1_000_000,
		cacheFiles: 100_000, makeTargets: 10_000,
		budget: map[string]time.Duration{
			"seqwrite": 50 * time.Second, "seqread": 40 * time.Second, "meta-serial": 40 * time.Second,
			"meta-parallel": 40 * time.Second, "build": 180 * time.Second, "intents": 60 * time.Second,
		},
	}
}

func (s sizes) describe() string {
	b := "source tree (all of GOROOT/src)"
	if s.buildSubset {
		b = "build = 7 small packages from a matching subset of GOROOT/src"
	}
	return fmt.Sprintf("sequential I/O %d MiB, %d small files, %s, intents %s per sample, %d pending paths",
		s.seqBytes>>20, s.metaFiles, b, s.intentDur, s.pendingPaths)
}

type workload struct {
	name, desc string
	metrics    []*Metric
	targets    []string
	setup      func(ctx context.Context, e *Env) error
	sample     func(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error)
	// after runs untimed after each sample (after hsmfs has settled).
	after    func(e *Env, t *Target, rep int) error
	teardown func(e *Env) error
	// custom replaces the repetition loop (the pending-paths workload).
	custom func(ctx context.Context, e *Env, res *Results, w *workload) error
}

var threeTargets = []string{"raw", "loopback", "hsmfs"}

func allWorkloads(sz sizes) []*workload {
	ws := append(comparedWorkloads(sz), soloWorkloads(sz)...)
	for _, w := range ws {
		if w.targets == nil {
			w.targets = threeTargets
		}
		for _, m := range w.metrics {
			m.Targets = w.targets
		}
	}
	return ws
}

// comparedWorkloads run on raw, loopback and hsmfs, and compare them.
func comparedWorkloads(sz sizes) []*workload {
	mib := fmt.Sprintf("%d MiB", sz.seqBytes>>20)
	if sz.seqBytes == 1<<30 {
		mib = "1 GiB"
	}
	vsRaw := Goal{Ref: "raw", Op: ">=", Value: 0.90}
	vsLoop := Goal{Ref: "loopback", Op: ">=", Value: 0.80}
	// Writes need no round trip through hsmfs (HANDLE_KILLPRIV_V2 and
	// kernel passthrough): they run at the disk's speed.
	vsRawWrite := Goal{Ref: "raw", Op: ">=", Value: 0.95}
	thru := func(id, label, unit string, g Goal) *Metric {
		return &Metric{ID: id, Label: label, Unit: unit, Section: secThroughput, Higher: true, Goal: g}
	}
	tm := func(id, label string, g Goal) *Metric {
		return &Metric{ID: id, Label: label, Unit: "s", Section: secTime, Goal: g}
	}
	metaMetrics := func(prefix, how string) []*Metric {
		var ms []*Metric
		for _, op := range metaPhases {
			ms = append(ms, thru(prefix+"."+op, fmt.Sprintf("%s %d x 4 KiB, %s", op, sz.metaFiles, how), "ops/s", vsLoop))
		}
		return ms
	}
	return []*workload{
		{
			name: "seqwrite", desc: "sequential write of one " + mib + " file, 1 MiB writes (and a quarter of it in 4 KiB writes), open to close",
			metrics: []*Metric{
				thru("seqwrite.nofsync", "seq write "+mib+", no fsync", "MiB/s", vsRawWrite),
				thru("seqwrite.fsync", "seq write "+mib+", fsync at end", "MiB/s", vsRawWrite),
				thru("seqwrite.4k", fmt.Sprintf("seq write %d MiB in 4 KiB writes", sz.seqBytes>>22), "MiB/s", vsRawWrite),
			},
			setup: setupSeqWrite, sample: sampleSeqWrite,
		},
		{
			name: "seqread", desc: "sequential read of one " + mib + " file, 1 MiB reads, cold (after drop_caches) then warm",
			metrics: []*Metric{
				thru("seqread.cold", "seq read "+mib+", cold cache", "MiB/s", vsRaw),
				thru("seqread.warm", "seq read "+mib+", warm cache", "MiB/s", vsRaw),
			},
			setup: setupSeqRead, sample: sampleSeqRead, teardown: teardownSeqRead,
		},
		{
			name: "meta-serial", desc: fmt.Sprintf("create (4 KiB written), chmod, rename, unlink of %d files, one process", sz.metaFiles),
			metrics: metaMetrics("meta.serial", "serial"),
			sample:  sampleMetaSerial,
		},
		{
			name: "meta-parallel", desc: fmt.Sprintf("the same with %d worker processes, %d files each in its own directory", sz.parWorkers, sz.metaFiles/sz.parWorkers),
			metrics: metaMetrics("meta.parallel", fmt.Sprintf("%d processes", sz.parWorkers)),
			sample:  sampleMetaParallel,
		},
		{
			name: "build", desc: "unpack (tar) the Go source tree (" + buildTreeDesc(sz) + "), go build " + buildWhat(sz) + " from it with GOROOT, GOCACHE and GOTMPDIR in the tree's filesystem (cold cache), rm -rf",
			metrics: []*Metric{
				tm("build.unpack", "build: unpack ("+buildTreeDesc(sz)+")", Goal{}),
				tm("build.compile", "build: go build "+buildWhat(sz)+", cold GOCACHE", Goal{}),
				tm("build.delete", "build: rm -rf", Goal{}),
				tm("build.total", "build: unpack+build+delete", Goal{Ref: "loopback", Op: "<=", Value: 1.10}),
			},
			setup: setupBuild, sample: sampleBuild,
		},
		cacheWorkload(sz),
	}
}

// soloWorkloads measure hsmfs (and the badger reference) against absolute
// limits.
func soloWorkloads(sz sizes) []*workload {
	thru := func(id, label, unit string, g Goal) *Metric {
		return &Metric{ID: id, Label: label, Unit: unit, Section: secThroughput, Higher: true, Goal: g}
	}
	return []*workload{
		{
			name:    "intents",
			desc:    fmt.Sprintf("%d goroutines create distinct new files (one intent each) for %s; badger: %d goroutines, one SyncWrites transaction each", sz.intentWriters, sz.intentDur, sz.intentWriters),
			targets: []string{"raw", "loopback", "hsmfs", "badger"},
			metrics: []*Metric{
				thru("intents", fmt.Sprintf("durable intents, %d first-writers", sz.intentWriters), "files/s", Goal{Ref: "badger", Op: ">=", Value: 4}),
			},
			sample: sampleIntents, after: afterIntents,
			teardown: func(e *Env) error {
				if len(e.intentsPerSync) > 0 {
					e.res.Note(fmt.Sprintf("intents: hsmfs created a median %.1f files per journal sync (group commit), from .hsm/status journal_syncs", median(e.intentsPerSync)))
				}
				return nil
			},
		},
		{
			name: "pending",
			desc: fmt.Sprintf("hsmfs alone: create %d recorded paths (symlinks, %d workers), then query, bless, daemon memory", sz.pendingPaths, sz.pendingWorkers),
			metrics: []*Metric{
				{ID: "pending.create", Label: fmt.Sprintf("create %s paths (%d workers)", countLabel(sz.pendingPaths), sz.pendingWorkers), Unit: "paths/s", Section: secAbsolute, Higher: true},
				{ID: "pending.query", Label: fmt.Sprintf("query, %s pending paths", countLabel(sz.pendingPaths)), Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: queryGoal(sz.pendingPaths)}},
				{ID: "pending.query.rss", Label: "daemon peak RSS growth while those queries ran", Unit: "MiB", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 256}},
				{ID: "pending.heap.own", Label: "hsmfs's own heap in use per pending path (not the inode table, not badger)", Unit: "B", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 64}},
				{ID: "pending.heap.fuse", Label: "the inode table (go-fuse's and hsmfs's nodes) per pending path", Unit: "B", Section: secAbsolute},
				{ID: "pending.consumer", Label: "query of one of 8 named consumers, the same paths", Unit: "s", Section: secAbsolute},
				{ID: "pending.consumer.ratio", Label: "that query / the default consumer's query", Unit: "x", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 1.1}},
				{ID: "pending.journal", Label: "journal on disk a minute after the bless / before the paths", Unit: "x", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 2}},
				{ID: "pending.bless", Label: fmt.Sprintf("bless, %s pending paths", countLabel(sz.pendingPaths)), Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 3}},
				{ID: "pending.rss", Label: "daemon peak RSS (VmHWM)", Unit: "MiB", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 512}},
			},
			targets: []string{"hsmfs"},
			custom:  runPending,
		},
		{
			name: "export",
			desc: fmt.Sprintf("hsmfs alone: %d pending paths made as in pending, then one `hsmfs export` round into a JetStream server embedded in the bench (file storage): one message per path, every ack, the bless", sz.pendingPaths),
			metrics: []*Metric{
				{ID: "export.rate", Label: fmt.Sprintf("export %s paths to JetStream, 1 exporter", countLabel(sz.pendingPaths)), Unit: "msgs/s", Section: secAbsolute, Higher: true},
				{ID: "export.round", Label: "export round (query, publish, acks, bless)", Unit: "s", Section: secAbsolute},
				{ID: "export.rss", Label: "exporter peak RSS", Unit: "MiB", Section: secAbsolute},
			},
			targets: []string{"hsmfs"},
			custom:  runExport,
		},
		stormWorkload(sz, "storm", "the rename storm (tools/storm)"),
		stormWorkload(sz, "deepstorm", "the deep rename storm (tools/storm.DeepOp: directories moved beneath any directory, the tree 30 and more levels deep)"),
		{
			name: "links",
			desc: fmt.Sprintf("hsmfs alone: every name of a file with links, in a tree of %s files (every tenth has a second link, made before the mount)", countLabel(sz.linkFiles)),
			metrics: []*Metric{
				{ID: "links.walk", Label: "reference: lstat walk of that tree", Unit: "s", Section: secAbsolute},
				{ID: "links.first", Label: "first query with a linked file (builds the index)", Unit: "s", Section: secAbsolute},
				{ID: "links.warm", Label: "next query with a linked file (index built)", Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 0.1}},
			},
			targets: []string{"hsmfs"},
			custom:  runLinks,
		},
		{
			name: "outside",
			desc: fmt.Sprintf("hsmfs alone: the check at mount for changes made while hsmfs did not run, on a tree of %s files (a mount with the check minus one without, against a plain lstat walk)", countLabel(sz.outsideFiles)),
			metrics: []*Metric{
				{ID: "outside.walk.warm", Label: "reference: lstat walk, warm caches", Unit: "s", Section: secAbsolute},
				{ID: "outside.delay.warm", Label: "mount delay of the check, warm caches", Unit: "s", Section: secAbsolute},
				{ID: "outside.ratio.warm", Label: "that delay / the lstat walk, warm", Unit: "x", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 1.5}},
				{ID: "outside.walk.cold", Label: "reference: lstat walk, caches dropped", Unit: "s", Section: secAbsolute},
				{ID: "outside.delay.cold", Label: "mount delay of the check, caches dropped", Unit: "s", Section: secAbsolute},
				{ID: "outside.ratio.cold", Label: "that delay / the lstat walk, cold", Unit: "x", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 1.5}},
				{ID: "outside.bytes", Label: "tree index on disk per entry", Unit: "bytes", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 64}},
			},
			targets: []string{"hsmfs"},
			custom:  runOutside,
		},
		hsmWorkload(sz),
		fleetWorkload(sz),
	}
}

func countLabel(n int) string {
	switch {
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func buildWhat(sz sizes) string {
	if sz.buildSubset {
		return "of 7 small packages"
	}
	return "of a program"
}

func buildTreeDesc(sz sizes) string {
	if sz.buildSubset {
		return "small subset of GOROOT/src"
	}
	return "GOROOT/src"
}

func selectWorkloads(ws []*workload, re *regexp.Regexp) []*workload {
	if re == nil {
		return ws
	}
	var out []*workload
	for _, w := range ws {
		match := re.MatchString(w.name)
		for _, m := range w.metrics {
			match = match || re.MatchString(m.ID)
		}
		if match {
			out = append(out, w)
		}
	}
	return out
}

func needsMounts(ws []*workload) bool {
	for _, w := range ws {
		if w.custom == nil {
			return true
		}
	}
	return false
}

// rotate gives the order of the targets in repetition rep: each target
// goes first, middle and last in turn.
func rotate(ts []string, rep int) []string {
	n := len(ts)
	out := make([]string, n)
	for i := range ts {
		out[i] = ts[(i+rep)%n]
	}
	return out
}

// runWorkload runs the repetitions, each one over every target in a
// rotating order. A workload stops adding repetitions (keeping at least
// one) once the next one would overrun its time budget: hsmfs may be
// much slower than the references, and the whole run must stay bounded.
func runWorkload(ctx context.Context, e *Env, w *workload, res *Results) error {
	for _, m := range w.metrics {
		res.Add(m)
	}
	fmt.Printf("\n== %s: %s\n", w.name, w.desc)
	wstart := time.Now()
	defer func() { fmt.Printf("  (%s took %.0fs)\n", w.name, time.Since(wstart).Seconds()) }()
	if w.custom != nil {
		return w.custom(ctx, e, res, w)
	}
	if w.setup != nil {
		if err := w.setup(ctx, e); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if w.teardown != nil {
		defer func() {
			if err := w.teardown(e); err != nil {
				fmt.Fprintf(os.Stderr, "%s: teardown: %v\n", w.name, err)
			}
		}()
	}
	reps := e.cfg.reps
	budget := e.sz.budget[w.name]
	start := time.Now()
	for rep := 0; rep < reps; rep++ {
		order := rotate(w.targets, rep)
		for _, m := range w.metrics {
			m.newRep(order)
		}
		for _, tn := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			t := e.target(tn)
			if t.dead != nil {
				for _, m := range w.metrics {
					m.fail(tn, fmt.Sprintf("rep %d: skipped: %v", rep+1, t.dead))
				}
				continue
			}
			t0 := time.Now()
			vals, err := w.sample(ctx, e, t, rep)
			el := time.Since(t0)
			if err == nil {
				err = t.settle()
			}
			if err == nil && w.after != nil {
				err = w.after(e, t, rep)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res.errors++
				msg := fmt.Sprintf("rep %d: %v", rep+1, err)
				fmt.Printf("  %-13s rep %d/%d %-8s ERROR: %v\n", w.name, rep+1, reps, tn, err)
				for _, m := range w.metrics {
					m.fail(tn, msg)
				}
				if aerr := t.alive(); aerr != nil {
					res.Note(fmt.Sprintf("%s: %s died during rep %d: %v; its log ends: %s", w.name, tn, rep+1, aerr, logTail(t.Log, 8)))
					fmt.Printf("  %s is dead (%v); mounting it again\n", tn, aerr)
					if rerr := e.revive(ctx, t); rerr != nil {
						t.dead = fmt.Errorf("dead since %s rep %d, remount failed: %v", w.name, rep+1, rerr)
						res.Note(fmt.Sprintf("%s: %v", tn, t.dead))
					}
				}
				continue
			}
			var parts []string
			for _, m := range w.metrics {
				if v, ok := vals[m.ID]; ok {
					m.set(tn, v)
					parts = append(parts, fmt.Sprintf("%s=%s", m.ID[strings.LastIndex(m.ID, ".")+1:], fmtNum(v)))
				}
			}
			fmt.Printf("  %-13s rep %d/%d %-8s %s %s (%.1fs)\n", w.name, rep+1, reps, tn, strings.Join(parts, " "), w.metrics[0].Unit, el.Seconds())
		}
		done := rep + 1
		if done < reps && budget > 0 {
			el := time.Since(start)
			if el+el/time.Duration(done) > budget {
				msg := fmt.Sprintf("%s: %d of %d repetitions: the next one would overrun the workload's time budget (%s)", w.name, done, reps, budget)
				res.Note(msg)
				fmt.Println("  " + msg)
				break
			}
		}
	}
	return nil
}

// soloRep starts a repetition of a workload that measures hsmfs alone,
// and returns what sets one of its rows.
func (w *workload) soloRep() (set func(id string, v float64)) {
	for _, mm := range w.metrics {
		mm.newRep([]string{"hsmfs"})
	}
	return func(id string, v float64) { w.metric(id).set("hsmfs", v) }
}

// metric is the row id of the workload (a misspelt id is a bug of the
// bench: it panics).
func (w *workload) metric(id string) *Metric {
	for _, m := range w.metrics {
		if m.ID == id {
			return m
		}
	}
	panic("bench: no row " + id)
}

// queryGoal is the pending query's limit in seconds: 2 s a million paths
// (20 s for the ten million of make bench-long), and never under 2 s.
func queryGoal(paths int) float64 { return max(2, 2*float64(paths)/1e6) }

// stormWorkload is a rename storm's workload (runStorm): what, the storm
// in words; its rows are named name.*.
func stormWorkload(sz sizes, name, what string) *workload {
	return &workload{
		name: name,
		desc: fmt.Sprintf("hsmfs alone: %s, %d writers x %d operations, then one query", what, sz.stormWorkers, sz.stormOps),
		metrics: []*Metric{
			{ID: name + ".ops", Label: fmt.Sprintf("%s, %d x %d operations", name, sz.stormWorkers, sz.stormOps), Unit: "ops/s", Section: secAbsolute, Higher: true},
			{ID: name + ".query", Label: "query after the " + name, Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 2}},
			{ID: name + ".lines", Label: "lines of that answer", Unit: "lines", Section: secAbsolute},
			{ID: name + ".rss", Label: "daemon peak RSS growth during that query", Unit: "MiB", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 100}},
		},
		targets: []string{"hsmfs"},
		custom:  runStorm,
	}
}
