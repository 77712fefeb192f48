package natsexport

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"golang.org/x/sys/unix"
)

// Copying the answers a round holds whole, and acking them.

// copy copies the whole answers (or the whole tree) and acks them.
func (f *Follower) copy(ctx context.Context, gap string, res *FollowResult) error {
	// While the mount is down its mount point is a bare directory:
	// rsync would find every listed path missing and delete it from
	// DEST (the whole tree, for a whole copy). Nothing is copied, and
	// nothing acked, until it is back.
	if err := f.live(ctx); err != nil {
		return fmt.Errorf("source %s is not a live hsmfs mount (%v): nothing copied; the next round tries again", f.cfg.Source, err)
	}
	if !f.remote {
		// rsync reads released files from their tier (no recall
		// storm); a remote rsync registers itself (source.go).
		if c, err := hsmctl.Open(f.cfg.Source, ""); err == nil {
			c.NoRecall()
		}
	}
	f.mu.Lock()
	sort.Slice(f.whole, func(i, j int) bool { return f.whole[i].query < f.whole[j].query })
	f.mu.Unlock()
	why := gap
	last := f.newest
	for _, a := range f.whole {
		switch {
		case why != "":
		case a.full:
			why = fmt.Sprintf("answer %d says full", a.query)
		case last != 0 && a.prev > last:
			// The exporter blessed answer a.prev after the last one
			// copied here, and it never came whole: the stream lost it.
			why = fmt.Sprintf("answer %d follows answer %d, which this follower never got whole", a.query, a.prev)
		}
		last = max(last, a.query)
	}
	if why != "" {
		res.Whole, res.WhyWhole = true, why
		if err := f.rsync(ctx, res, []string{"-a", "-I", "--delete", "--exclude=/.hsm"}, f.cfg.Source, f.cfg.Dest); err != nil {
			return err
		}
	} else if err := f.copyAnswers(ctx, res); err != nil {
		return err
	}
	alone, err := f.holdsAllInFlight(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.whole
	var newest uint64
	for _, a := range f.whole {
		newest = max(newest, a.query)
	}
	for q, a := range f.open {
		// An answer that will never be whole: the exporter died while
		// it published it, and did not bless it, so a later answer,
		// copied now, lists every path of it. That is so only if no
		// message of the consumer is in flight elsewhere (delivered to
		// a follower that died, due again): otherwise the rest of it
		// may still come. After a copy of the whole tree, made after
		// their queries ran, every held answer is covered.
		if why != "" || q < newest && alone {
			done = append(done, a)
			delete(f.open, q)
		}
	}
	var oldest time.Time
	for _, a := range done {
		for _, m := range a.msgs {
			if md, err := m.Metadata(); err == nil && (oldest.IsZero() || md.Timestamp.Before(oldest)) {
				oldest = md.Timestamp
			}
			if err := m.Ack(); err != nil {
				return fmt.Errorf("ack: %w (the answer is copied; it will be delivered and copied again)", err)
			}
		}
		f.copied[a.query] = true
		f.newest = max(f.newest, a.query)
	}
	res.Answers = len(f.whole)
	f.whole = nil
	// The acks go out in order on the connection; a flush returns once
	// the server has them all.
	if err := f.nc.FlushTimeout(30 * time.Second); err != nil {
		return fmt.Errorf("ack: %w (the answers are copied; they will be delivered and copied again)", err)
	}
	if !oldest.IsZero() {
		res.Lag = time.Since(oldest)
	}
	return nil
}

// holdsAllInFlight reports whether every message of the consumer that
// has been delivered and not acked is one this follower holds, and none
// is waiting: then an answer it holds part of has no other part left.
func (f *Follower) holdsAllInFlight(ctx context.Context) (bool, error) {
	ci, err := f.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("consumer %q: %w", f.cfg.Durable, err)
	}
	return ci.NumPending == 0 && ci.NumAckPending == len(f.held()), nil
}

// copyAnswers runs the contract's recipe on the paths of the whole
// answers. A path listed as anything but a directory that is a directory
// again when the copy runs is copied whole: a later answer, not yet
// here, may name what it holds, and DEST may keep what an earlier copy
// left beneath it.
func (f *Follower) copyAnswers(ctx context.Context, res *FollowResult) error {
	typ := map[string]string{}
	notDir := map[string]bool{}
	for _, a := range f.whole {
		for _, e := range a.paths {
			typ[e.path] = e.typ
			if e.typ != "dir" {
				notDir[e.path] = true
			}
		}
	}
	// A path beneath an ancestor that is not a directory is left out,
	// as the plain answer leaves it out: rsync replaces the ancestor
	// whole, and refuses the path ("invalid path from sender"). The
	// answers' types are those of their queries; an older answer that
	// came late (delivered again after a follower died) may name a path
	// whose ancestor has become a file since, in an answer copied
	// already. So the ancestors are looked at in SOURCE as it is now.
	notDirNow := map[string]bool{}
	isNotDir := func(d string) bool {
		v, ok := notDirNow[d]
		if !ok {
			var st unix.Stat_t
			v = unix.Lstat(filepath.Join(f.looked(), d), &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR
			notDirNow[d] = v
		}
		return v
	}
	var list []string
	for p := range typ {
		shadowed := false
		for d := filepath.Dir(p); d != "." && d != "/" && !shadowed; d = filepath.Dir(d) {
			t, listed := typ[d]
			switch {
			case listed && t != "dir" && t != "gone":
				shadowed = true
			case listed && f.remote:
				// DEST shows what an earlier copy left, which this
				// copy is about to change: the answer's own type is
				// the better word for a listed ancestor.
			case isNotDir(d):
				shadowed = true
			}
		}
		if !shadowed {
			list = append(list, p)
		}
	}
	sort.Strings(list)
	res.Paths = len(list)
	lf, err := os.CreateTemp("", "hsmfs-follow-*.list")
	if err != nil {
		return err
	}
	defer os.Remove(lf.Name())
	_, err = io.WriteString(lf, strings.Join(list, "\x00")+"\x00")
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := f.rsync(ctx, res, []string{"-a", "-I", "--from0", "--files-from=" + lf.Name(), "--delete-missing-args", "--force"},
		f.cfg.Source, f.cfg.Dest); err != nil {
		return err
	}
	for _, p := range list {
		var st unix.Stat_t
		if !notDir[p] || unix.Lstat(filepath.Join(f.looked(), p), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		res.WholePaths++
		if err := f.rsync(ctx, res, []string{"-a", "-I", "--delete"}, filepath.Join(f.cfg.Source, p), filepath.Join(f.cfg.Dest, p)); err != nil {
			return err
		}
	}
	return nil
}

// rsync copies the content of directory src into dest, as hsmfs sync
// copies (exit 24, a file vanished, is success: what changed after the
// query, which a later answer lists).
func (f *Follower) rsync(ctx context.Context, res *FollowResult, opts []string, src, dest string) error {
	n, err := f.rs.Copy(ctx, opts, src+"/", dest+"/")
	res.Bytes += n
	return err
}
