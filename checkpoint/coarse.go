package checkpoint

import (
	"fmt"
	"time"
)

// Coarse mode.
//
// A serial workload (an untar, a build, an rm -rf) cannot share syncs
// with anyone, and a device flush per file would dominate its cost. So,
// when the store can append without a sync, most intents are recorded as
// a durable intent on the parent directory D, synced once per directory
// and period (deduplicated like any intent), plus the fine record naming
// the entry, appended without a sync:
//
//   - an intent that neither removes nor moves a name is covered by a
//     directory intent (OpEntries on D): "the entries of D may change in
//     this period";
//   - a removal (unlink, rmdir, or the old name of a rename of anything
//     but a directory, not an exchange) is covered by a roster
//     (OpRoster on D): the names that D held when the roster was taken,
//     read from BACKING and made durable before the first removal in D of
//     the period goes on. A removal is covered only if its name is in the
//     roster; any other removal (a name that appeared in D after the
//     roster, a directory too big to roster) is a synced fine record,
//     as in fine mode. The new name of a rename is covered by an OpEntries
//     intent on its directory.
//
// Without a crash every fine record is visible to the next query, which
// answers them as usual and ignores the directory intents and rosters.
// After an unclean end the fine records of the crashed run may be lost, so
// a query answers each directory intent of that run with D and every
// entry of D as it is now (not recursively: an entry created inside a new
// subdirectory has a directory intent of its own), and each roster with
// D/name for every name in it.
//
// Why that is rsync-complete: a lost fine record was never answered (a
// query writes every queued fine record before its answer's sync). What it
// named is either there now, and listed as an entry of a directory intent,
// or was removed. A removal made without a synced record of its own named
// a name in the durable roster of its period, which stays until a bless
// of a query that started a later period, and that query's scan saw the
// removal's fine record. So every name that the consumer's copy may hold
// and that a lost record removed is listed. The membership test matters:
// a name created after the roster by a modification of the previous
// period still in flight may already be in an answer (that query answers
// the previous period), and the roster does not hold it.
//
// A roster also takes rosters of the directories beneath D that have none
// in the period yet, breadth first, within a budget, in the same synced
// append (rosters ahead): an rm -rf then pays one sync per subtree, not
// one per directory. A roster ahead is an intent that no modification
// holds yet; it goes idle at once and its completion is recorded after the
// usual delay, so a crash soon after it reports its names in flight
// (accuracy only). A removal that joins it later is covered as by any
// roster of its directory; one that joins it after its completion takes
// the completion back with a synced Reopen first, as any intent does.
//
// Renames of directories and exchanges stay synced fine records: a query
// expands them into every path beneath both names, which no roster
// could replace. rsync with --files-from does not recurse.
//
// If the store reports that queued fine records were lost (a failed
// write), the current run's directory intents and rosters are answered
// the same way.

// coarseOp reports which kinds of modification a directory intent may
// cover.
func coarseOp(op Op) bool {
	switch op {
	case OpUnlink, OpRmdir, OpRename, OpEntries, OpRoster:
		return false
	}
	return true
}

// rosterRemoval reports whether a roster may cover in.
func rosterRemoval(in Intent) bool {
	switch in.Op {
	case OpUnlink, OpRmdir:
		return in.Path != ""
	case OpRename:
		return in.Flags&(FlagDir|FlagExchange) == 0 && in.Path != "" && in.Path2 != ""
	}
	return false
}

// removal is a removal intent waiting for its roster's membership test.
type removal struct {
	in     Intent
	roster int // index of the OpRoster intent among the durable ones
}

// acquire finds or creates the durable intents for ins within period p
// and takes a reference on each. Fresh intents are appended in one batch,
// so they share one sync.
//
// In coarse mode (see coarse.go) most intents become a durable intent on
// their directory plus an unsynced fine record; es then holds the
// directory's entries, not one entry per intent.
func (t *Tracker) acquire(p uint64, ins ...Intent) ([]*sharedIntent, error) {
	if t.async == nil {
		return t.acquireDurable(p, ins)
	}
	durable, fine, rems := t.coarsen(ins)
	t.coverNewDirs(p, durable)
	es, err := t.acquireDurable(p, durable)
	if err != nil {
		return nil, err
	}
	t.censusForMkdirs(es, durable, fine)
	// A removal whose name the durable roster holds needs no sync of
	// its own; any other one does (coarse.go says why).
	var synced []Intent
	for _, r := range rems {
		if t.covered(es[r.roster], r.in.Path) {
			fine = append(fine, r.in)
		} else {
			synced = append(synced, r.in)
		}
	}
	if len(synced) > 0 {
		more, err := t.acquireDurable(p, synced)
		if err != nil {
			for _, e := range es {
				t.release(e)
			}
			return nil, err
		}
		es = append(es, more...)
	}
	if len(fine) > 0 {
		t.queueFine(p, fine)
	}
	return es, nil
}

func (t *Tracker) acquireDurable(p uint64, ins []Intent) ([]*sharedIntent, error) {
	set := t.ps.set(p)
	es := make([]*sharedIntent, len(ins))
	fresh := make([]bool, len(ins))
	var recs []*Record
	var ahead []*sharedIntent // rosters ahead (roster.go), fresh like es[i] but held by no one
	now := time.Now()
	for i, in := range ins {
		// By hand, not get and putIfAbsent: the entry is made only
		// when the key is new, under the one lock (the hot path).
		k := keyOfIntent(&in)
		sh := &set.shards[set.shard(&k)]
		sh.mu.Lock()
		e := sh.m[k]
		if e == nil {
			e = &sharedIntent{ready: make(chan struct{}), refs: 1}
			e.rec = Record{Period: p, Run: t.run, Op: in.Op, Flags: in.Flags, Ino: in.Ino,
				Parent: in.Parent, Parent2: in.Parent2, Ino2: in.Ino2, Time: now, Path: in.Path, Path2: in.Path2}
			sh.m[k] = e
			fresh[i] = true
		}
		sh.mu.Unlock()
		es[i] = e
		if fresh[i] {
			recs = append(recs, &e.rec)
			if in.Op == OpRoster {
				// Read before the header is durable, and before
				// any removal that waits for it goes on.
				chunks, subdirs := t.takeRoster(e)
				recs = append(recs, chunks...)
				more, aheadRecs := t.takeAhead(set, e, subdirs)
				ahead = append(ahead, more...)
				recs = append(recs, aheadRecs...)
			}
		}
	}
	var err error
	if len(recs) > 0 {
		err = t.append(recs)
	}
	settle := func(e *sharedIntent) {
		e.err = err
		if err != nil {
			set.remove(keyOfRecord(&e.rec))
		}
		close(e.ready)
	}
	for i, e := range es {
		if fresh[i] {
			settle(e)
		}
	}
	for _, e := range ahead {
		settle(e)
		if err == nil {
			t.idle(e) // no one holds it: completed after the usual delay
		}
	}
	if err != nil {
		return nil, fmt.Errorf("journal intent %s %q: %w", ins[0].Op, ins[0].Path, err)
	}
	for i, e := range es {
		if fresh[i] {
			continue
		}
		<-e.ready
		if err == nil && e.err != nil {
			err = fmt.Errorf("journal intent %s %q: %w", e.rec.Op, e.rec.Path, e.err)
		}
		if err == nil {
			if jerr := t.join(e); jerr != nil {
				err = fmt.Errorf("journal reopen %q: %w", e.rec.Path, jerr)
			} else {
				continue
			}
		}
		es[i] = nil
	}
	if err != nil {
		for _, e := range es {
			if e != nil {
				t.release(e)
			}
		}
		return nil, err
	}
	return es, nil
}

// coarsen returns the durable intents that cover ins, the fine intents to
// append without a sync, and the removals whose fine records may go
// unsynced if the roster holds their names.
func (t *Tracker) coarsen(ins []Intent) (durable, fine []Intent, rems []removal) {
	durable = make([]Intent, 0, len(ins))
	for _, in := range ins {
		switch {
		case coarseOp(in.Op) && in.Path != "":
			durable = append(durable, Intent{Op: OpEntries, Flags: FlagDir, Path: parentDir(in.Path)})
			fine = append(fine, in)
		case rosterRemoval(in):
			rems = append(rems, removal{in: in, roster: len(durable)})
			durable = append(durable, Intent{Op: OpRoster, Flags: FlagDir, Path: parentDir(in.Path)})
			if in.Op == OpRename {
				durable = append(durable, Intent{Op: OpEntries, Flags: FlagDir, Path: parentDir(in.Path2)})
			}
		default:
			durable = append(durable, in)
		}
	}
	return durable, fine, rems
}

// Limits of a roster. A directory with more names is not
// rostered: its removals are synced fine records. A chunk stays well
// below any store's bound on a path (the journal's is 64 KiB).
const (
	maxListNames = 1 << 16
	maxListBytes = 4 << 20
	namesChunk   = 32 << 10
)

// Budget of the rosters ahead that one roster takes (directories, and
// names in all of them): reading them delays the first removal in D of a
// period by a few milliseconds at most.
const (
	aheadDirs  = 4096
	aheadNames = 1 << 16
)

// TypedLister is an optional Backing method: the entries directly beneath
// dir, with whether each is a directory. Without it there are no
// rosters ahead.
type TypedLister interface {
	ListTyped(dir string, fn func(path string, isDir bool)) error
}

// queueFine appends the fine records that period p does not have yet.
func (t *Tracker) queueFine(p uint64, fine []Intent) {
	set := t.ps.set(p)
	var recs []*Record
	now := time.Now()
	for _, in := range fine {
		if set.putFineIfAbsent(keyOfIntent(&in)) {
			recs = append(recs, &Record{Period: p, Run: t.run, Op: in.Op, Flags: in.Flags | FlagFine, Ino: in.Ino,
				Parent: in.Parent, Parent2: in.Parent2, Ino2: in.Ino2, Time: now, Path: in.Path, Path2: in.Path2})
		}
	}
	if len(recs) > 0 {
		t.queuedRecs.Add(uint64(len(recs)))
		t.async.AppendAsync(recs)
	}
}
