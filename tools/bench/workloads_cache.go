package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The kernel-cache workload: programs that stat paths they already know,
// again after a pause longer than the go-fuse loopback's one-second
// entry and attribute timeouts (git status, make, rsync's quick check,
// editors). hsmfs lets the kernel keep names and attributes for a day
// (fs/cache.go); the loopback asks again after a second. The trees are
// made straight in each target's BACKING (no journal is needed for a
// read benchmark), once.

// cachePause is the pause between the warm-up and the timed run: past
// the loopback's timeouts.
const cachePause = 1500 * time.Millisecond

func cacheWorkload(sz sizes) *workload {
	tm := func(id, label string, g Goal) *Metric {
		return &Metric{ID: id, Label: label, Unit: "s", Section: secTime, Goal: g}
	}
	return &workload{
		name: "cache",
		desc: fmt.Sprintf("warm, after a %v pause: lstat of %s known paths (a git checkout of %s files in %d directories), git status in it, a no-op make -r -j4 over %s targets (no built-in rules: their search is CPU, not file system)",
			cachePause, countLabel(sz.cacheFiles), countLabel(sz.cacheFiles), sz.cacheFiles/cacheFilesPerDir, countLabel(sz.makeTargets)),
		metrics: []*Metric{
			tm("cache.stat", fmt.Sprintf("lstat %s known paths, warm", countLabel(sz.cacheFiles)), Goal{Ref: "loopback", Op: "<=", Value: 0.2}),
			tm("cache.git", fmt.Sprintf("git status, %s-file checkout, warm", countLabel(sz.cacheFiles)), Goal{Ref: "loopback", Op: "<=", Value: 1.0 / 3}),
			tm("cache.make", fmt.Sprintf("no-op make -r -j4, %s targets, warm", countLabel(sz.makeTargets)), Goal{Ref: "loopback", Op: "<=", Value: 1.0 / 3}),
		},
		setup: setupCache, sample: sampleCache,
	}
}

const cacheFilesPerDir = 100

// setupCache makes a git repository of the checkout once, clones it into
// each target's BACKING, and makes the make tree there.
func setupCache(ctx context.Context, e *Env) error {
	staging := filepath.Join(e.backFS, "cache-staging")
	if err := makeCheckout(ctx, staging, e.sz.cacheFiles); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.RemoveAll(staging)
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "git", "clone", "-q", staging, filepath.Join(t.Backing, "cache-git")).CombinedOutput(); err != nil {
			return fmt.Errorf("cache: %s: git clone: %v: %s", tn, err, out)
		}
		if err := makeMakeTree(filepath.Join(t.Backing, "cache-make"), e.sz.makeTargets); err != nil {
			return fmt.Errorf("cache: %s: %w", tn, err)
		}
	}
	return nil
}

// makeCheckout makes dir a git repository of n small files committed.
func makeCheckout(ctx context.Context, dir string, n int) error {
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%04d", i/cacheFilesPerDir))
		if i%cacheFilesPerDir == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d.c", i%cacheFilesPerDir)), []byte(fmt.Sprintf("int f%d;\n", i)), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"init", "-q"}, {"add", "-A"},
		{"-c", "user.name=hsmfs-bench", "-c", "user.email=bench@hsmfs", "commit", "-q", "-m", "tree"},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", args[0], err, out)
		}
	}
	return nil
}

// makeMakeTree makes a Makefile of n targets out/fI from src/fI, all
// built (each out newer than its source).
func makeMakeTree(dir string, n int) error {
	for _, d := range []string{"src", "out"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	mk := "SRCS := $(wildcard src/*)\nall: $(patsubst src/%,out/%,$(SRCS))\nout/%: src/%\n\t@cp $< $@\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		return err
	}
	old := time.Now().Add(-time.Hour)
	for i := 0; i < n; i++ {
		src := filepath.Join(dir, "src", fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(src, []byte("x\n"), 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(src, old, old); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "out", fmt.Sprintf("f%05d", i)), []byte("x\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func sampleCache(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	out := map[string]float64{}
	repo := filepath.Join(t.Dir, "cache-git")
	paths := make([]string, 0, e.sz.cacheFiles)
	for i := 0; i < e.sz.cacheFiles; i++ {
		paths = append(paths, filepath.Join(repo, fmt.Sprintf("d%04d", i/cacheFilesPerDir), fmt.Sprintf("f%03d.c", i%cacheFilesPerDir)))
	}
	stat := func() error {
		for _, p := range paths {
			if _, err := os.Lstat(p); err != nil {
				return err
			}
		}
		return nil
	}
	runs := []struct {
		id string
		do func() error
	}{
		{"cache.stat", stat},
		{"cache.git", func() error { return quietCmd(ctx, repo, "git", "status", "--porcelain") }},
		{"cache.make", func() error {
			return quietCmd(ctx, filepath.Join(t.Dir, "cache-make"), "make", "-r", "-j4", "-s")
		}},
	}
	for _, r := range runs {
		if err := r.do(); err != nil { // the warm-up
			return nil, fmt.Errorf("%s: %w", r.id, err)
		}
		time.Sleep(cachePause)
		start := time.Now()
		if err := r.do(); err != nil {
			return nil, fmt.Errorf("%s: %w", r.id, err)
		}
		out[r.id] = time.Since(start).Seconds()
	}
	return out, nil
}

// quietCmd runs a command in dir and fails if it prints anything (git
// status of a clean checkout and a no-op make print nothing).
func quietCmd(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		return fmt.Errorf("%s %s printed %.200q", name, strings.Join(args, " "), s)
	}
	return nil
}
