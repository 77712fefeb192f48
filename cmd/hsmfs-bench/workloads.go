package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmfs/hsmfs/journal"
	"golang.org/x/sys/unix"
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
	queryReps      int
	budget         map[string]time.Duration // per workload, see runWorkload
}

func sizesFor(short bool) sizes {
	if short {
		return sizes{
			short: true, seqBytes: 256 << 20, metaFiles: 1000, parWorkers: 4, buildSubset: true,
			intentDur: time.Second, intentWriters: 16, intentMax: 16000,
			pendingPaths: 100_000, pendingWorkers: 32, pendingBudget: 20 * time.Second, queryReps: 1,
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
	mib := fmt.Sprintf("%d MiB", sz.seqBytes>>20)
	if sz.seqBytes == 1<<30 {
		mib = "1 GiB"
	}
	vsRaw := Goal{Ref: "raw", Op: ">=", Value: 0.90}
	vsLoop := Goal{Ref: "loopback", Op: ">=", Value: 0.80}
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
	ws := []*workload{
		{
			name: "seqwrite", desc: "sequential write of one " + mib + " file, 1 MiB writes, open to close",
			metrics: []*Metric{
				thru("seqwrite.nofsync", "seq write "+mib+", no fsync", "MiB/s", vsRaw),
				thru("seqwrite.fsync", "seq write "+mib+", fsync at end", "MiB/s", vsRaw),
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
				{ID: "pending.query", Label: fmt.Sprintf("query, %s pending paths", countLabel(sz.pendingPaths)), Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 3}},
				{ID: "pending.bless", Label: fmt.Sprintf("bless, %s pending paths", countLabel(sz.pendingPaths)), Unit: "s", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 3}},
				{ID: "pending.rss", Label: "daemon peak RSS (VmHWM)", Unit: "MiB", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 512}},
			},
			targets: []string{"hsmfs"},
			custom:  runPending,
		},
	}
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

// --- sequential I/O ---

var ioBuf = func() []byte {
	b := make([]byte, 1<<20)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}()

// writeFile writes size bytes in 1 MiB writes; the time covers open,
// the writes, the fsync if asked, and close.
func writeFile(p string, size int64, fsync bool) (time.Duration, error) {
	start := time.Now()
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", p, err)
	}
	for n := int64(0); n < size; {
		w, err := unix.Write(fd, ioBuf)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("write %s: %w", p, err)
		}
		n += int64(w)
	}
	if fsync {
		if err := unix.Fsync(fd); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	if err := unix.Close(fd); err != nil {
		return 0, fmt.Errorf("close %s: %w", p, err)
	}
	return time.Since(start), nil
}

// readFile reads p whole in 1 MiB reads; the time covers open and close.
func readFile(p string, want int64) (time.Duration, error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", p, err)
	}
	var n int64
	for {
		r, err := unix.Read(fd, buf)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("read %s: %w", p, err)
		}
		if r == 0 {
			break
		}
		n += int64(r)
	}
	unix.Close(fd)
	d := time.Since(start)
	if n != want {
		return 0, fmt.Errorf("read %s: %d bytes, want %d", p, n, want)
	}
	return d, nil
}

func mibps(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }

// setupSeqWrite writes and deletes the file once on every target,
// untimed: the first large write after a quiet spell pays for reclaiming
// page cache and would make the first sample an outlier.
func setupSeqWrite(ctx context.Context, e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		p := filepath.Join(t.Dir, "seqwrite.dat")
		if _, err := writeFile(p, e.sz.seqBytes, false); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		if err := t.settle(); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
	}
	unix.Sync()
	return nil
}

func sampleSeqWrite(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	p := filepath.Join(t.Dir, "seqwrite.dat")
	out := map[string]float64{}
	for _, v := range []struct {
		id    string
		fsync bool
	}{{"seqwrite.nofsync", false}, {"seqwrite.fsync", true}} {
		// Start from a clean slate: no dirty data of earlier samples.
		unix.Sync()
		d, err := writeFile(p, e.sz.seqBytes, v.fsync)
		if err != nil {
			return nil, err
		}
		out[v.id] = mibps(e.sz.seqBytes, d)
		if err := os.Remove(p); err != nil {
			return nil, err
		}
	}
	unix.Sync()
	return out, nil
}

func setupSeqRead(ctx context.Context, e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		if _, err := writeFile(filepath.Join(t.Dir, "seqread.dat"), e.sz.seqBytes, true); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
		if err := t.settle(); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
	}
	return nil
}

func sampleSeqRead(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	p := filepath.Join(t.Dir, "seqread.dat")
	if err := dropCaches(); err != nil {
		return nil, err
	}
	cold, err := readFile(p, e.sz.seqBytes)
	if err != nil {
		return nil, err
	}
	warm, err := readFile(p, e.sz.seqBytes)
	if err != nil {
		return nil, err
	}
	return map[string]float64{"seqread.cold": mibps(e.sz.seqBytes, cold), "seqread.warm": mibps(e.sz.seqBytes, warm)}, nil
}

func teardownSeqRead(e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		if err := os.Remove(filepath.Join(t.Dir, "seqread.dat")); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := t.settle(); err != nil {
			return err
		}
	}
	return nil
}

// --- small-file metadata ---

var metaPhases = []string{"create", "chmod", "rename", "unlink"}

var smallFile = ioBuf[:4096]

// metaPhase runs one kind of operation over n files in dir. The files
// are f00000... until renamed to r00000...
func metaPhase(dir, phase string, n int) error {
	name := func(prefix byte, i int) string {
		return dir + "/" + string(prefix) + fmt.Sprintf("%05d", i)
	}
	for i := 0; i < n; i++ {
		var err error
		switch phase {
		case "create":
			var fd int
			fd, err = unix.Open(name('f', i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				_, err = unix.Write(fd, smallFile)
				if cerr := unix.Close(fd); err == nil {
					err = cerr
				}
			}
		case "chmod":
			err = unix.Chmod(name('f', i), 0o600)
		case "rename":
			err = unix.Rename(name('f', i), name('r', i))
		case "unlink":
			err = unix.Unlink(name('r', i))
		default:
			return fmt.Errorf("unknown phase %q", phase)
		}
		if err != nil {
			return fmt.Errorf("%s %d in %s: %w", phase, i, dir, err)
		}
	}
	return nil
}

func sampleMetaSerial(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	dir := filepath.Join(t.Dir, fmt.Sprintf("meta-serial-%d", rep))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	unix.Sync()
	out := map[string]float64{}
	n := e.sz.metaFiles
	for _, ph := range metaPhases {
		start := time.Now()
		if err := metaPhase(dir, ph, n); err != nil {
			return nil, err
		}
		out["meta.serial."+ph] = float64(n) / time.Since(start).Seconds()
	}
	return out, os.Remove(dir)
}

func sampleMetaParallel(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	base := filepath.Join(t.Dir, fmt.Sprintf("meta-parallel-%d", rep))
	if err := os.Mkdir(base, 0o755); err != nil {
		return nil, err
	}
	per := e.sz.metaFiles / e.sz.parWorkers
	ws, err := startWorkers(e, base, e.sz.parWorkers, per)
	if err != nil {
		return nil, err
	}
	defer ws.stop()
	unix.Sync()
	out := map[string]float64{}
	for _, ph := range metaPhases {
		start := time.Now()
		if err := ws.do(ph); err != nil {
			return nil, err
		}
		out["meta.parallel."+ph] = float64(per*e.sz.parWorkers) / time.Since(start).Seconds()
	}
	if err := ws.do("exit"); err != nil {
		return nil, err
	}
	ws.stop()
	return out, os.Remove(base)
}

// --- build ---

func setupBuild(ctx context.Context, e *Env) error {
	_, err := e.goTarball(ctx)
	return err
}

func sampleBuild(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	tarball, err := e.goTarball(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(t.Dir, fmt.Sprintf("build-%d", rep))
	tree := filepath.Join(dir, "go")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return nil, err
	}
	unix.Sync()
	out := map[string]float64{}
	run := func(id string, c *exec.Cmd) error {
		start := time.Now()
		b, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c.Args, " "), err, lastLines(string(b), 5))
		}
		out[id] = time.Since(start).Seconds()
		return nil
	}
	if err := run("build.unpack", exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", tree)); err != nil {
		return nil, err
	}
	// The toolchain's binaries (compile, link, asm) are not part of the
	// tree; everything they read and write is.
	if err := os.Symlink(filepath.Join(e.goroot, "pkg"), filepath.Join(tree, "pkg")); err != nil {
		return nil, err
	}
	for _, d := range []string{"gocache", "gotmp", "gopath"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(dir, "hello")
	c := exec.CommandContext(ctx, e.goBin, "build", "-o", bin, ".")
	if e.sz.buildSubset {
		// The short run compiles a few small packages and links nothing.
		c = exec.CommandContext(ctx, e.goBin, append([]string{"build"}, shortBuildPkgs...)...)
	}
	c.Dir = filepath.Join(tree, "src", "benchhello")
	c.Env = append(cleanGoEnv(),
		"GOROOT="+tree, "GOCACHE="+filepath.Join(dir, "gocache"), "GOTMPDIR="+filepath.Join(dir, "gotmp"),
		"GOPATH="+filepath.Join(dir, "gopath"), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOENV=off", "GOFLAGS=")
	if err := run("build.compile", c); err != nil {
		return nil, err
	}
	if !e.sz.buildSubset {
		if b, err := exec.Command(bin).CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "hi" {
			return nil, fmt.Errorf("the built program does not work: %v %q", err, b)
		}
	}
	if err := run("build.delete", exec.CommandContext(ctx, "rm", "-rf", dir)); err != nil {
		return nil, err
	}
	out["build.total"] = out["build.unpack"] + out["build.compile"] + out["build.delete"]
	return out, nil
}

// cleanGoEnv is the environment without the variables that would change
// what go build does.
func cleanGoEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "CGO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

const helloMain = "package main\n\nfunc main() { println(\"hi\") }\n"

// shortBuildPkgs is what the short run compiles: 7 packages, no runtime.
var shortBuildPkgs = []string{"internal/abi", "internal/bytealg", "math", "unicode/utf8"}

// goTarball makes, once, the tarball of the Go source tree that the build
// workload unpacks: VERSION, go.env and src/ of the installed toolchain,
// plus src/benchhello, a program with no imports (its build compiles the
// runtime and its dependencies, ~30 packages, from the tree). The short
// run's tarball holds only the directories of shortBuildPkgs and their
// dependencies.
func (e *Env) goTarball(ctx context.Context) (string, error) {
	kind := "full"
	if e.sz.buildSubset {
		kind = "subset"
	}
	p := filepath.Join(e.cfg.cacheDir, fmt.Sprintf("go-src-%s-%s.tar", e.goVersion, kind))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(e.cfg.cacheDir, 0o755); err != nil {
		return "", err
	}
	staging, err := os.MkdirTemp(e.cfg.cacheDir, "staging.")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	if err := os.MkdirAll(filepath.Join(staging, "src", "benchhello"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(staging, "src", "benchhello", "main.go"), []byte(helloMain), 0o644); err != nil {
		return "", err
	}
	tmpf, err := os.CreateTemp(e.cfg.cacheDir, filepath.Base(p)+".tmp.")
	if err != nil {
		return "", err
	}
	tmpf.Close()
	tmp := tmpf.Name()
	args := []string{"-cf", tmp}
	if kind == "full" {
		args = append(args, "-C", e.goroot, "VERSION", "go.env", "src")
	} else {
		c := exec.CommandContext(ctx, e.goBin, append([]string{"list", "-deps", "-f", "{{.Dir}}"}, shortBuildPkgs...)...)
		c.Env = append(cleanGoEnv(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOENV=off")
		out, err := c.Output()
		if err != nil {
			return "", fmt.Errorf("go list -deps: %w", err)
		}
		files := []string{"VERSION", "go.env", "src/go.mod"}
		for _, d := range strings.Fields(string(out)) {
			ents, err := os.ReadDir(d)
			if err != nil {
				return "", err
			}
			r, err := filepath.Rel(e.goroot, d)
			if err != nil {
				return "", err
			}
			for _, de := range ents {
				if de.Type().IsRegular() {
					files = append(files, filepath.Join(r, de.Name()))
				}
			}
		}
		list := filepath.Join(staging, "files")
		if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
			return "", err
		}
		args = append(args, "--no-recursion", "-C", e.goroot, "-T", list)
	}
	args = append(args, "-C", staging, "src/benchhello", "src/benchhello/main.go")
	fmt.Printf("  making the source tarball %s (once)\n", p)
	if out, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("tar: %v: %s", err, out)
	}
	return p, os.Rename(tmp, p)
}

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
	var n atomic.Int64
	var stop atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	per := max / writers
	start := time.Now()
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			d := filepath.Join(dir, fmt.Sprintf("w%02d", w))
			for i := 0; i < per && !stop.Load() && ctx.Err() == nil; i++ {
				fd, err := unix.Open(fmt.Sprintf("%s/f%06d", d, i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err == nil {
					err = unix.Close(fd)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, n.Load(), fmt.Errorf("create in %s: %w", dir, firstErr)
	}
	return float64(n.Load()) / el.Seconds(), n.Load(), ctx.Err()
}

func intentsDir(e *Env, t *Target, rep int) string {
	return fmt.Sprintf("intents-%d", rep)
}

func sampleIntents(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	sz := e.sz
	if t.Name == "badger" {
		dir := filepath.Join(e.jourFS, fmt.Sprintf("badger-%d", rep))
		defer os.RemoveAll(dir)
		r, err := journal.ReferenceSyncedRate(ctx, dir, sz.intentWriters, sz.intentDur, sz.intentMax)
		if err != nil {
			return nil, err
		}
		return map[string]float64{"intents": r}, nil
	}
	var syncs0 float64
	if t.Name == "hsmfs" {
		if st, err := hsmStatus(t.Mnt); err == nil {
			syncs0 = statusNum(st, "journal_syncs")
		}
	}
	unix.Sync()
	r, n, err := createRate(ctx, filepath.Join(t.Dir, intentsDir(e, t, rep)), sz.intentWriters, sz.intentDur, sz.intentMax)
	if err != nil {
		return nil, err
	}
	if t.Name == "hsmfs" && n > 0 {
		if st, err := hsmStatus(t.Mnt); err == nil && syncs0 >= 0 {
			syncs := statusNum(st, "journal_syncs") - syncs0
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
func runPending(ctx context.Context, e *Env, res *Results, w *workload) error {
	m := func(id string) *Metric {
		for _, m := range w.metrics {
			if m.ID == id {
				return m
			}
		}
		panic(id)
	}
	for _, mm := range w.metrics {
		mm.newRep([]string{"hsmfs"})
	}
	t := &Target{Name: "hsmfs", Backing: filepath.Join(e.backFS, "pending"), Mnt: filepath.Join(e.work, "mnt-pending"),
		Journal: filepath.Join(e.jourFS, "pending-journal"), env: e}
	t.Dir = t.Mnt
	for _, d := range []string{t.Backing, t.Mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := e.mountHsmfs(ctx, t); err != nil {
		return err
	}
	defer func() {
		start := time.Now()
		t.unmount.run()
		removeTree(t.Backing)
		removeTree(t.Journal)
		fmt.Printf("  unmounted and removed the pending tree in %.1fs\n", time.Since(start).Seconds())
	}()

	const perDir = 1000
	total := e.sz.pendingPaths
	dirs := (total + perDir - 1) / perDir
	var made atomic.Int64
	var firstErr error
	var once sync.Once
	var stop atomic.Bool
	deadline := time.Now().Add(e.sz.pendingBudget)
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for g := 0; g < e.sz.pendingWorkers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d := int(next.Add(1)) - 1
				if d >= dirs {
					return
				}
				dir := fmt.Sprintf("%s/d%04d", t.Mnt, d)
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
			fmt.Printf("  pending: %d paths in %.0fs (%.0f/s)\n", n, time.Since(start).Seconds(), float64(n)/time.Since(start).Seconds())
		}
	}
	ticker.Stop()
	el := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}
	n := made.Load()
	rate := float64(n) / el.Seconds()
	m("pending.create").set("hsmfs", rate)
	fmt.Printf("  pending: created %d symlinks in %d directories in %.1fs (%.0f paths/s)\n", n, dirs, el.Seconds(), rate)
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
		fmt.Printf("  pending: status says pending_paths=%.0f journal_syncs=%.0f\n", statusNum(st, "pending_paths"), statusNum(st, "journal_syncs"))
	}
	hwmC, rssC, _ := procMem(t.pid)

	for i := 0; i < e.sz.queryReps; i++ {
		if i > 0 {
			for _, mm := range w.metrics[1:2] {
				mm.newRep([]string{"hsmfs"})
			}
		}
		lines, d, err := hsmQuery(t.Mnt)
		if err != nil {
			res.errors++
			m("pending.query").fail("hsmfs", err.Error())
			return err
		}
		m("pending.query").set("hsmfs", d.Seconds())
		fmt.Printf("  pending: query %d answered %d lines in %.2fs\n", i+1, lines, d.Seconds())
		if want := n + int64(dirs); lines < n {
			res.Note(fmt.Sprintf("pending: the query answered %d lines, expected about %d", lines, want))
		}
	}
	_, rssQ, _ := procMem(t.pid)
	d, err := hsmBless(t.Mnt)
	if err != nil {
		res.errors++
		m("pending.bless").fail("hsmfs", err.Error())
		return err
	}
	m("pending.bless").set("hsmfs", d.Seconds())
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
