package hsmrun

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"syscall"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// usage is the share of the mount's file system in use, in percent, as
// df counts it, and the bytes that one percent is.
func usage(mnt string) (used, percentBytes float64, err error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(mnt, &s); err != nil {
		return 0, 0, err
	}
	u := s.Blocks - s.Bfree
	if u+s.Bavail == 0 {
		return 0, 0, nil
	}
	return 100 * float64(u) / float64(u+s.Bavail), float64(u+s.Bavail) * float64(s.Bsize) / 100, nil
}

// releasable is an archived file that a release may take.
type releasable struct {
	path   string
	last   int64 // last opened (or its atime), unix ns
	size   int64
	blocks int64
}

// release releases archived files, least recently opened first, while
// usage is above ReleaseTo, once it went above ReleaseAbove.
func (r *Runner) release(ctx context.Context, rep *Report) error {
	used, pct, err := usage(r.o.Mountpoint)
	if err != nil {
		return err
	}
	rep.UsedBefore, rep.UsedAfter = used, used
	if r.o.ReleaseAbove <= 0 || used <= r.o.ReleaseAbove {
		return nil
	}
	files := r.releasable()
	for len(files) > 0 && used > r.o.ReleaseTo && ctx.Err() == nil {
		// The files whose blocks make up what is to be freed, then a
		// look at the usage (other writers may have used or freed some).
		need := (used - r.o.ReleaseTo) * pct
		n, freed := 0, 0.0
		for n < len(files) && freed < need {
			freed += float64(files[n].blocks * 512)
			n++
		}
		batch := files[:n]
		files = files[n:]
		paths := make([]string, len(batch))
		for i, f := range batch {
			paths[i] = f.path
		}
		r.each(ctx, paths, hsmctl.HSMCommand{Verb: hsmctl.HSMRelease}, func(p string, err error) {
			if err != nil {
				rep.Failed++
				fmt.Fprintf(r.o.Out, "hsm run: %v\n", err)
				return
			}
			i := slices.IndexFunc(batch, func(f releasable) bool { return f.path == p })
			rep.Released++
			rep.FreedBytes += batch[i].blocks * 512
		})
		if used, pct, err = usage(r.o.Mountpoint); err != nil {
			return err
		}
		rep.UsedAfter = used
	}
	return nil
}

// releasable lists the archived files that may be released, least
// recently opened first: opened through this mount since it was mounted
// (the mount keeps that), else by atime.
func (r *Runner) releasable() []releasable {
	var out []releasable
	for ino, p := range r.st.Archived {
		full := filepath.Join(r.o.Mountpoint, p)
		var st syscall.Stat_t
		if syscall.Stat(full, &st) != nil || st.Ino != ino {
			delete(r.st.Archived, ino) // gone, or another file now
			continue
		}
		fs, err := hsmctl.FileStateOf(full)
		if err != nil {
			continue
		}
		if !slices.Contains(fs.States, "archived") {
			delete(r.st.Archived, ino) // removed from the tier
			continue
		}
		if slices.ContainsFunc(fs.States, func(s string) bool { return s == "released" || s == "dirty" || s == "norelease" || s == "lost" }) ||
			st.Size < r.o.MinSize || st.Blocks == 0 {
			continue
		}
		last := fs.OpenedAt
		if last == 0 {
			last = st.Atim.Nano()
		}
		out = append(out, releasable{path: p, last: last, size: st.Size, blocks: st.Blocks})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].last != out[j].last {
			return out[i].last < out[j].last
		}
		return out[i].path < out[j].path
	})
	return out
}
