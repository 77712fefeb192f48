package lifecycle

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/outside"
)

// outsideCheck is the check at mount for changes made around hsmfs while
// it did not run (internal/outside), and the tree index it keeps.
type outsideCheck struct {
	Result  string // ran, skipped, first mount, no index, everything
	Found   int
	Seconds float64
	full    bool            // every consumer was told to copy the whole tree
	deltas  *outside.Deltas // names changed through the mount since the index
	index   string
	log     string
}

// checkOutside runs before the mount goes live: the changes found are
// durable records before anything can change BACKING through the mount.
func checkOutside(a Config, b *backing.Tree, tr *checkpoint.Tracker, log *slog.Logger) (*outsideCheck, error) {
	oc := &outsideCheck{index: outside.IndexPath(a.Journal), log: outside.DeltasPath(a.Journal)}
	if a.NoOutsideCheck {
		// Nothing to keep current: the next check has no index and
		// cannot vouch for the time between.
		os.Remove(oc.index)
		os.Remove(oc.log)
		oc.Result = "skipped"
		return oc, nil
	}
	start := time.Now()
	old, everything, err := oc.loadIndex(b, tr, log)
	if err != nil {
		return nil, err
	}
	w := outside.Now()
	if old != nil && w < old.W {
		log.Warn("outside check: the clock is behind the last index; listing the whole tree and every path of the index", "index", time.Unix(0, old.W), "now", time.Unix(0, w))
		everything, oc.Result = true, "everything"
	}
	res, err := outside.Walk(b.RootFd(), w, old, everything)
	if err != nil {
		return nil, fmt.Errorf("outside check: %w", err)
	}
	if oc.full {
		res.Changed = append(res.Changed, ".")
	}
	if res.Changed != nil {
		slices.Sort(res.Changed)
		paths := slices.Compact(res.Changed)
		if err := tr.RecordOutside(paths); err != nil {
			return nil, fmt.Errorf("outside check: %w", err)
		}
		oc.Found = len(paths)
	}
	if err := oc.keep(res.Index); err != nil {
		return nil, err
	}
	oc.Seconds = time.Since(start).Seconds()
	log.Info("outside check", "result", oc.Result, "found", oc.Found, "entries", res.Index.Entries(), "seconds", oc.Seconds)
	return oc, nil
}

// loadIndex reads the index and replays the log of names on it; it says
// whether the whole tree must be listed (the index is damaged, or of
// another filesystem: then it is returned too, for its names).
func (oc *outsideCheck) loadIndex(b *backing.Tree, tr *checkpoint.Tracker, log *slog.Logger) (*outside.Index, bool, error) {
	old, err := outside.Load(oc.index)
	switch {
	case errors.Is(err, outside.ErrNoIndex):
		oc.Result = "first mount"
		if tr.Run() == 1 {
			return nil, false, nil
		}
		oc.Result = "no index"
		log.Warn("outside check: no tree index (the last run skipped the check, or an older hsmfs made this journal, or the index was removed): changes made to BACKING while hsmfs was not running cannot be listed; every consumer's next answers say full, until it has copied the whole tree and blessed")
		return nil, false, oc.requireFull(tr)
	case err != nil:
		log.Error("outside check: listing the whole tree, but what was removed meanwhile cannot be listed; every consumer's next answers say full, until it has copied the whole tree and blessed", "err", err)
		oc.Result = "everything"
		return nil, true, oc.requireFull(tr)
	}
	if err := outside.ReadDeltas(oc.log, old); err != nil {
		return nil, false, err
	}
	if old.Dev != b.Dev() {
		log.Warn("outside check: BACKING is on another filesystem than when the index was taken; listing the whole tree and every path of the index")
		oc.Result = "everything"
		return old, true, nil
	}
	oc.Result = "ran"
	return old, false, nil
}

// requireFull makes every consumer copy the whole tree once, durably
// before the mount goes live. The root is then listed too, so that no
// consumer's next answer is empty: hsmfs export publishes nothing for an
// empty answer, and its readers would never see the answer's full.
func (oc *outsideCheck) requireFull(tr *checkpoint.Tracker) error {
	if err := tr.RequireFullCopy(); err != nil {
		return fmt.Errorf("outside check: %w", err)
	}
	oc.full = true
	return nil
}

// keep makes idx the index and starts an empty log of names beside it,
// in that order: a crash in between leaves the old log, which names the
// old index and is not replayed on the new one.
func (oc *outsideCheck) keep(idx *outside.Index) error {
	if err := idx.Save(oc.index); err != nil {
		return err
	}
	d, err := outside.OpenDeltas(oc.log, idx)
	if err != nil {
		return err
	}
	oc.deltas = d
	return nil
}

// atCleanEnd writes a new index once the mount is gone and the journal
// is closed cleanly: the next check then looks only at what changed after
// this moment. The index is the mount's with the log of names replayed on
// it (outside.Replayed), which is the tree as it is now without a walk of
// BACKING; if that cannot be read, a walk. If it fails, the index of the
// mount and its log stay (as after a crash), or the new index stays
// without its log (which holds nothing: the mount is gone).
func (oc *outsideCheck) atCleanEnd(b *backing.Tree, log *slog.Logger) {
	if oc == nil || oc.deltas == nil {
		return
	}
	if err := oc.deltas.Close(); err != nil {
		log.Error("outside check: closing the log of names", "err", err)
		return
	}
	start := time.Now()
	w := outside.Now()
	how := "replayed"
	idx, err := outside.Replayed(oc.index, oc.log, w)
	if err != nil {
		log.Warn("outside check: the index of the mount could not be replayed; walking BACKING", "err", err)
		how = "walked"
		var res *outside.Result
		if res, err = outside.Walk(b.RootFd(), w, nil, false); err == nil {
			idx = res.Index
		}
	}
	if err == nil {
		err = oc.keep(idx)
	}
	if err == nil {
		err = oc.deltas.Close()
	}
	if err != nil {
		log.Error("outside check: the index at unmount failed; the next mount's check lists more", "err", err)
		return
	}
	log.Info("outside check: index taken at unmount", "how", how, "entries", idx.Entries(), "seconds", time.Since(start).Seconds())
}

// status is what .hsm/status and the changes.json header say of it.
func (oc *outsideCheck) status() map[string]any {
	return map[string]any{"outside_check": oc.Result, "outside_found": oc.Found}
}

// nameAdded feeds the log of names (nil-safe for a skipped check).
func (oc *outsideCheck) nameAdded(dir uint64, name string, ino uint64, isDir bool) {
	if oc.deltas != nil {
		oc.deltas.Add(dir, name, ino, isDir)
	}
}

// nameRemoved feeds the log of names (nil-safe for a skipped check).
func (oc *outsideCheck) nameRemoved(dir uint64, name string) {
	if oc.deltas != nil {
		oc.deltas.Gone(dir, name)
	}
}

func (oc *outsideCheck) sync() error {
	if oc.deltas == nil {
		return nil
	}
	return oc.deltas.Sync()
}
