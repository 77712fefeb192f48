// Package bench is hsmfs-bench (tools/cmd/hsmfs-bench is its thin main): it
// measures hsmfs against the raw BACKING directory and
// against go-fuse's example loopback filesystem, interleaved in one run,
// and prints medians and ratios with the project's performance targets.
// scripts/bench.sh (make bench, make bench-short) is the usual way to run
// it; docs/performance.md explains the workloads and the columns.
//
// Every figure is a ratio between targets measured back to back in the
// same run: the machine is shared and absolute timings are noisy. Misses
// are reported, never turned into a failure: the exit code is 0 unless
// the harness itself failed (setup, a crashed mount, a failed operation).
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const usage = `Usage: hsmfs-bench [options]

Runs the hsmfs benchmarks on three targets (the raw BACKING directory, the
go-fuse example loopback, hsmfs), interleaved, and prints a table of
medians, ratios and targets. Results go to OUT/latest.{json,csv,txt} and
OUT/latest-samples.csv (--short: latest-short.*; --only: partial.*), with
a dated copy of the JSON in OUT/history/. Run as root (mounts, drop_caches).

Options:
  --short            smaller sizes and fewer repetitions (< 1 minute)
  --reps N           repetitions per workload (default 5, --short 2)
  --only REGEX       run only the workloads (or rows) whose name matches
  --list             list the workloads and their rows, then exit
  --backing-dir DIR  where the temporary work directory goes (default /var/tmp)
  --work DIR         use this (empty) work directory instead of a new one
  --loop             put BACKING and JOURNAL on two loop-mounted filesystems
                     (image files in the work directory, removed afterwards)
  --loop-fs TYPE     ext4 (default) or xfs, for --loop
  --pending N        the pending workload's paths (default 1,000,000, or
                     100,000 with --short); make bench-long runs 10,000,000
                     on loop-mounted XFS (the root ext4 has too few inodes)
  --out DIR          results directory (default bench-results)
  --cache-dir DIR    where the Go source tarball is cached
                     (default /var/tmp/hsmfs-bench-cache)
  --hsmfs PATH       the hsmfs binary (default bin/hsmfs)
  --loopback PATH    the go-fuse example loopback binary (default bin/loopback)
  --hsmfs-arg ARG    extra argument for "hsmfs mount" (repeatable)
  --metrics          mount hsmfs with --metrics 127.0.0.1:0 and scrape
                     /metrics once a second while mounted (the cost of
                     metrics: compare with a run without)
  --cpuprofile DIR   write CPU profiles of the hsmfs daemons (HSMFS_CPUPROFILE)
                     and of the loopback (-cpuprofile) into DIR, and heap
                     profiles of the pending workload's daemon (HSMFS_MEMPROFILE,
                     SIGUSR1) after creating the paths and after the queries
  -h, --help         this help
`

type config struct {
	short      bool
	reps       int
	only       *regexp.Regexp
	list       bool
	backingDir string
	work       string
	loop       bool
	pending    int // --pending, 0 for the size's default
	loopFS     string
	out        string
	cacheDir   string
	hsmfsBin   string
	loopBin    string
	hsmfsArgs  []string
	metrics    bool
	cpuprof    string
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Main runs hsmfs-bench with its command-line arguments and returns the
// exit code. "worker" is the form in which the harness re-executes
// itself for the parallel workloads.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "worker" {
		return workerMain(args[1:])
	}
	return benchMain(args)
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("hsmfs-bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	var only string
	var hargs multiFlag
	fs.BoolVar(&c.short, "short", false, "")
	fs.IntVar(&c.reps, "reps", 0, "")
	fs.StringVar(&only, "only", "", "")
	fs.BoolVar(&c.list, "list", false, "")
	fs.StringVar(&c.backingDir, "backing-dir", "/var/tmp", "")
	fs.StringVar(&c.work, "work", "", "")
	fs.BoolVar(&c.loop, "loop", false, "")
	fs.IntVar(&c.pending, "pending", 0, "")
	fs.StringVar(&c.loopFS, "loop-fs", "ext4", "")
	fs.StringVar(&c.out, "out", "bench-results", "")
	fs.StringVar(&c.cacheDir, "cache-dir", "/var/tmp/hsmfs-bench-cache", "")
	fs.StringVar(&c.hsmfsBin, "hsmfs", "bin/hsmfs", "")
	fs.StringVar(&c.loopBin, "loopback", "bin/loopback", "")
	fs.Var(&hargs, "hsmfs-arg", "")
	fs.BoolVar(&c.metrics, "metrics", false, "")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.hsmfsArgs = hargs
	if c.metrics {
		// In hsmfs_args of the results too, so that a run with
		// metrics is told apart from one without.
		c.hsmfsArgs = append(c.hsmfsArgs, metricsArgs...)
	}
	if c.reps == 0 {
		c.reps = 5
		if c.short {
			c.reps = 2
		}
	}
	if c.reps < 1 {
		return nil, fmt.Errorf("--reps must be at least 1")
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return nil, fmt.Errorf("--only: %w", err)
		}
		c.only = re
	}
	if c.loopFS != "ext4" && c.loopFS != "xfs" {
		return nil, fmt.Errorf("--loop-fs must be ext4 or xfs")
	}
	for _, p := range []*string{&c.hsmfsBin, &c.loopBin, &c.out, &c.cacheDir, &c.cpuprof, &c.backingDir} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, err
			}
			*p = abs
		}
	}
	return c, nil
}

func benchMain(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsmfs-bench:", err)
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	sz := sizesFor(cfg.short)
	if cfg.pending > 0 {
		// The creation's time budget grows with the paths: about
		// 4,000 a second at the least.
		sz.pendingPaths = cfg.pending
		sz.pendingBudget = max(sz.pendingBudget, time.Duration(cfg.pending/4000)*time.Second)
	}
	wls := selectWorkloads(allWorkloads(sz), cfg.only)
	if cfg.list {
		for _, w := range allWorkloads(sz) {
			fmt.Printf("%-14s %s\n", w.name, w.desc)
			for _, m := range w.metrics {
				fmt.Printf("    %-24s %s\n", m.ID, m.Label)
			}
		}
		return 0
	}
	if len(wls) == 0 {
		fmt.Fprintln(os.Stderr, "hsmfs-bench: --only matches no workload")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "hsmfs-bench: run as root (mounts, drop_caches, loop devices)")
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := &Env{cfg: cfg, sz: sz, cl: newCleanups()}

	go stopOnSignal(cancel, env)

	start := time.Now()
	res := newResults(cfg, sz)
	env.res = res
	runErr := runAll(ctx, env, wls, res)
	res.Duration = time.Since(start)
	env.cl.runAll()
	res.Duration = time.Since(start)

	interrupted := ctx.Err() != nil
	if !saveResults(cfg, res, interrupted) {
		return 1
	}
	fmt.Printf("total duration: %s\n", res.Duration.Round(time.Second))
	if interrupted {
		fmt.Fprintln(os.Stderr, "hsmfs-bench: interrupted; everything it mounted is unmounted")
		return 130
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "hsmfs-bench:", runErr)
		return 1
	}
	if n := res.ErrorCount(); n > 0 {
		fmt.Fprintf(os.Stderr, "hsmfs-bench: %d sample(s) failed; see ERR cells and the notes above\n", n)
		return 1
	}
	return 0
}

// stopOnSignal cancels the run on SIGINT, SIGTERM or SIGHUP and lets it
// unwind (every mount is on the cleanup stack); if it does not unwind in
// time, or on a second signal, it cleans up from here and exits.
func stopOnSignal(cancel context.CancelFunc, env *Env) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	s := <-sigs
	fmt.Fprintf(os.Stderr, "\nhsmfs-bench: %v: stopping and unmounting\n", s)
	cancel()
	select {
	case <-sigs:
	case <-time.After(20 * time.Second):
	}
	fmt.Fprintln(os.Stderr, "hsmfs-bench: forcing cleanup (lazy unmounts, killing what it started)")
	env.forceCleanup()
	os.Exit(130)
}

// saveResults prints the table and, unless the run was interrupted,
// writes it: latest.* is the last complete full run, latest-short.* the
// last short one; --only runs go to partial.* (partial-short.*). It
// reports false if writing failed.
func saveResults(cfg *config, res *Results, interrupted bool) bool {
	if len(res.Metrics) == 0 {
		return true
	}
	table := res.Table()
	fmt.Print("\n" + table)
	name := "latest"
	if cfg.only != nil {
		name = "partial"
	}
	if cfg.short {
		name += "-short"
	}
	if interrupted {
		fmt.Println("\ninterrupted: results not saved")
		return true
	}
	if err := res.Write(cfg.out, name, table); err != nil {
		fmt.Fprintln(os.Stderr, "hsmfs-bench: writing results:", err)
		return false
	}
	fmt.Printf("\nresults: %s/%s.{txt,json,csv}, samples: %s/%s-samples.csv\n", rel(cfg.out), name, rel(cfg.out), name)
	return true
}

func rel(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// runAll sets up the environment and runs the selected workloads in order.
func runAll(ctx context.Context, env *Env, wls []*workload, res *Results) error {
	cfg := env.cfg
	mode := "FULL"
	if cfg.short {
		mode = "SHORT"
	}
	fmt.Printf("hsmfs-bench: %s run, %d rep(s), %s, %d CPUs, %s\n", mode, cfg.reps,
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), kernelRelease())
	if cfg.short {
		fmt.Println("SHORT RUN: " + env.sz.describe() + "; figures are a smoke test, not comparable with a full run")
	}
	t0 := time.Now()
	if err := env.Setup(ctx, needsMounts(wls)); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	fmt.Printf("setup took %.1fs\n", time.Since(t0).Seconds())
	res.Env = env.describe()
	fmt.Println(res.Env)
	for _, w := range wls {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := runWorkload(ctx, env, w, res); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Note(fmt.Sprintf("%s: stopped: %v", w.name, err))
			fmt.Fprintf(os.Stderr, "%s: stopped: %v\n", w.name, err)
			res.errors++
		}
	}
	return nil
}
