package hsmrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// Options are hsm run's settings.
type Options struct {
	Mountpoint string
	Consumer   string // the named consumer (default "hsm")
	// ArchiveAfter: a file is archived once its last change is older.
	ArchiveAfter time.Duration
	// ReleaseAbove and ReleaseTo are percentages of BACKING's file
	// system in use: above the first, archived files are released until
	// usage is at or below the second. 0 disables releases.
	ReleaseAbove, ReleaseTo float64
	MinSize                 int64  // smaller files are neither archived nor released
	Tier                    uint32 // 0: the mount's default tier
	Jobs                    int
	State                   string // the state file
	Out                     io.Writer
}

// Report is what one round did.
type Report struct {
	Query                     uint64
	Listed, Candidates        int
	Archived, Released        int
	ArchivedBytes, FreedBytes int64
	UsedBefore, UsedAfter     float64 // percent
	Failed                    int
}

func (r Report) String() string {
	return fmt.Sprintf("query %d: %d listed, %d candidates; archived %d (%s), released %d (%s); BACKING %.1f%% -> %.1f%% used; %d failed",
		r.Query, r.Listed, r.Candidates, r.Archived, hsmctl.BytesIEC(uint64(r.ArchivedBytes)), r.Released, hsmctl.BytesIEC(uint64(r.FreedBytes)), r.UsedBefore, r.UsedAfter, r.Failed)
}

// Runner runs rounds on one mount.
type Runner struct {
	o   Options
	ctl *hsmctl.Client
	st  *state
	now func() time.Time
}

// New opens the mount's consumer (adding it if it is new) and the state.
func New(o Options) (*Runner, error) {
	if o.Consumer == "" {
		o.Consumer = "hsm"
	}
	if o.Jobs < 1 {
		o.Jobs = 8
	}
	if o.ReleaseAbove > 0 && (o.ReleaseTo <= 0 || o.ReleaseTo >= o.ReleaseAbove) {
		return nil, fmt.Errorf("--release-to (%.0f%%) must be below --release-above (%.0f%%)", o.ReleaseTo, o.ReleaseAbove)
	}
	mctl, err := hsmctl.Open(o.Mountpoint, "")
	if err != nil {
		return nil, err
	}
	if err := mctl.Do(hsmctl.Command{Verb: hsmctl.VerbConsumerAdd, Name: o.Consumer}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("consumer %s: %w", o.Consumer, err)
	}
	ctl, err := hsmctl.Open(o.Mountpoint, o.Consumer)
	if err != nil {
		return nil, err
	}
	st, err := loadState(o.State, o.Mountpoint)
	if err != nil {
		return nil, err
	}
	return &Runner{o: o, ctl: ctl, st: st, now: time.Now}, nil
}

// Round reads the consumer's answer, keeps its files as candidates,
// blesses it, archives the candidates that are old enough, and releases
// what the file system's usage asks for.
func (r *Runner) Round(ctx context.Context) (Report, error) {
	var rep Report
	if err := r.take(&rep); err != nil {
		return rep, err
	}
	r.archive(ctx, &rep)
	if err := r.st.save(r.o.State); err != nil {
		return rep, err
	}
	err := r.release(ctx, &rep)
	rep.Candidates = len(r.st.Candidates)
	return rep, err
}

// take reads one answer into the candidates, saves the state and blesses
// the answer.
func (r *Runner) take(rep *Report) error {
	ans, err := r.ctl.Query()
	if err != nil {
		return err
	}
	defer ans.Close()
	rep.Query = ans.Header.Query
	now := r.now().Unix()
	if ans.Header.Full {
		// The first answer (or one after a reset) cannot say what
		// changed: every file is a candidate, once.
		if err := r.walk(now, rep); err != nil {
			return err
		}
	}
	for {
		e, err := ans.NextEntry()
		if err != nil {
			return err
		}
		if e == nil {
			break
		}
		rep.Listed++
		switch e.Type {
		case "file":
			if _, ok := r.st.Candidates[e.Path]; !ok {
				r.st.Candidates[e.Path] = now
			}
			if _, ok := r.st.Archived[e.Ino]; ok {
				r.st.Archived[e.Ino] = e.Path // renamed, or written
			}
		case "gone", "dir", "symlink", "other":
			delete(r.st.Candidates, e.Path)
		}
	}
	if err := r.st.save(r.o.State); err != nil {
		return err
	}
	return r.ctl.Bless(ans.Header.Query, ans.Header.Full, "hsm run")
}

// walk makes every regular file of the mount a candidate, and notes the
// archived ones (a full answer).
func (r *Runner) walk(now int64, rep *Report) error {
	return filepath.WalkDir(r.o.Mountpoint, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile: the next answer says
		}
		rel, _ := filepath.Rel(r.o.Mountpoint, p)
		if d.IsDir() && rel == hsmctl.Dir {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		r.st.Candidates[rel] = now
		// What was archived before (by hand, or by an earlier state
		// file) is a release candidate too.
		if fs, err := hsmctl.FileStateOf(p); err == nil && slices.Contains(fs.States, "archived") {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					r.st.Archived[st.Ino] = rel
				}
			}
		}
		return nil
	})
}

// archive archives the candidates whose last change is older than
// ArchiveAfter, Jobs at a time.
func (r *Runner) archive(ctx context.Context, rep *Report) {
	cutoff := r.now().Add(-r.o.ArchiveAfter)
	var paths []string
	for p := range r.st.Candidates {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(r.o.Mountpoint, p), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			delete(r.st.Candidates, p)
			continue
		}
		if st.Size < r.o.MinSize {
			delete(r.st.Candidates, p) // too small to be worth it
			continue
		}
		if time.Unix(st.Mtim.Sec, st.Mtim.Nsec).After(cutoff) || time.Unix(st.Ctim.Sec, st.Ctim.Nsec).After(cutoff) {
			continue // changed too lately: a later round
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	cmd := hsmctl.HSMCommand{Verb: hsmctl.HSMArchive, Tier: r.o.Tier}
	r.each(ctx, paths, cmd, func(p string, err error) {
		full := filepath.Join(r.o.Mountpoint, p)
		var he *hsmctl.HSMError
		switch {
		case err == nil:
			var st syscall.Stat_t
			if syscall.Stat(full, &st) == nil {
				r.st.Archived[st.Ino] = p
				rep.ArchivedBytes += st.Size
			}
			rep.Archived++
			delete(r.st.Candidates, p)
		case errors.As(err, &he) && (he.Errno == syscall.EPERM || he.Errno == syscall.EINVAL):
			delete(r.st.Candidates, p) // noarchive, or not a file now
		case errors.As(err, &he) && (he.Errno == syscall.EAGAIN || he.Errno == syscall.EBUSY):
			// changing or open for writing: a later round
		default:
			rep.Failed++
			fmt.Fprintf(r.o.Out, "hsm run: %v\n", err)
		}
	})
}

// each runs cmd on paths, Jobs at a time; done hears of each, on the
// caller's goroutine.
func (r *Runner) each(ctx context.Context, paths []string, cmd hsmctl.HSMCommand, done func(string, error)) {
	type result struct {
		path string
		err  error
	}
	todo, results := make(chan string), make(chan result)
	var wg sync.WaitGroup
	for range min(r.o.Jobs, len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range todo {
				results <- result{p, hsmctl.FileDo(filepath.Join(r.o.Mountpoint, p), cmd)}
			}
		}()
	}
	go func() {
		defer close(todo)
		for _, p := range paths {
			select {
			case todo <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for res := range results {
		done(res.path, res.err)
	}
}
