package checkpoint

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
//     but a directory, not an exchange) is covered by a names snapshot
//     (OpNames on D): the names that D held when the snapshot was taken,
//     read from BACKING and made durable before the first removal in D of
//     the period goes on. A removal is covered only if its name is in the
//     snapshot; any other removal (a name that appeared in D after the
//     snapshot, a directory too big to snapshot) is a synced fine record,
//     as in fine mode. The new name of a rename is covered by an OpEntries
//     intent on its directory.
//
// Without a crash every fine record is visible to the next query, which
// answers them as usual and ignores the directory intents and snapshots.
// After an unclean end the fine records of the crashed run may be lost, so
// a query answers each directory intent of that run with D and every
// entry of D as it is now (not recursively: an entry created inside a new
// subdirectory has a directory intent of its own), and each snapshot with
// D/name for every name in it.
//
// Why that is rsync-complete: a lost fine record was never answered (a
// query writes every queued fine record before its answer's sync). What it
// named is either there now, and listed as an entry of a directory intent,
// or was removed. A removal made without a synced record of its own named
// a name in the durable snapshot of its period, which stays until a bless
// of a query that started a later period, and that query's scan saw the
// removal's fine record. So every name that the consumer's copy may hold
// and that a lost record removed is listed. The membership test matters:
// a name created after the snapshot by a modification of the previous
// period still in flight may already be in an answer (that query answers
// the previous period), and the snapshot does not hold it.
//
// A names snapshot also snapshots the directories beneath D that have none
// in the period yet, breadth first, within a budget, in the same synced
// append (snapshots ahead): an rm -rf then pays one sync per subtree, not
// one per directory. A snapshot ahead is an intent that no modification
// holds yet; it goes idle at once and its completion is recorded after the
// usual delay, so a crash soon after it reports its names in flight
// (accuracy only). A removal that joins it later is covered as by any
// snapshot of its directory; one that joins it after its completion takes
// the completion back with a synced Reopen first, as any intent does.
//
// Renames of directories and exchanges stay synced fine records: a query
// expands them into every path beneath both names, which no snapshot
// could replace. rsync with --files-from does not recurse.
//
// If the store reports that queued fine records were lost (a failed
// write), the current run's directory intents and snapshots are answered
// the same way.

// coarseOp reports which kinds of modification a directory intent may
// cover.
func coarseOp(op Op) bool {
	switch op {
	case OpUnlink, OpRmdir, OpRename, OpEntries, OpNames:
		return false
	}
	return true
}

// snapshotRemoval reports whether a names snapshot may cover in.
func snapshotRemoval(in Intent) bool {
	switch in.Op {
	case OpUnlink, OpRmdir:
		return in.Path != ""
	case OpRename:
		return in.Flags&(FlagDir|FlagExchange) == 0 && in.Path != "" && in.Path2 != ""
	}
	return false
}

func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// removal is a removal intent waiting for its snapshot's membership test.
type removal struct {
	in   Intent
	snap int // index of the OpNames intent among the durable ones
}

// coarsen returns the durable intents that cover ins, the fine intents to
// append without a sync, and the removals whose fine records may go
// unsynced if the snapshot holds their names.
func (t *Tracker) coarsen(ins []Intent) (durable, fine []Intent, rems []removal) {
	durable = make([]Intent, 0, len(ins))
	for _, in := range ins {
		switch {
		case coarseOp(in.Op) && in.Path != "":
			durable = append(durable, Intent{Op: OpEntries, Flags: FlagDir, Path: parentDir(in.Path)})
			fine = append(fine, in)
		case snapshotRemoval(in):
			rems = append(rems, removal{in: in, snap: len(durable)})
			durable = append(durable, Intent{Op: OpNames, Flags: FlagDir, Path: parentDir(in.Path)})
			if in.Op == OpRename {
				durable = append(durable, Intent{Op: OpEntries, Flags: FlagDir, Path: parentDir(in.Path2)})
			}
		default:
			durable = append(durable, in)
		}
	}
	return durable, fine, rems
}

// Limits of a names snapshot. A directory with more names is not
// snapshotted: its removals are synced fine records. A chunk stays well
// below any store's bound on a path (the journal's is 64 KiB).
const (
	maxSnapshotNames = 1 << 16
	maxSnapshotBytes = 4 << 20
	snapshotChunk    = 32 << 10
)

// Budget of the snapshots ahead that one snapshot takes (directories, and
// names in all of them): reading them delays the first removal in D of a
// period by a few milliseconds at most.
const (
	aheadDirs  = 4096
	aheadNames = 1 << 16
)

// TypedLister is an optional Backing method: the entries directly beneath
// dir, with whether each is a directory. Without it there are no
// snapshots ahead.
type TypedLister interface {
	ListTyped(dir string, fn func(path string, isDir bool)) error
}

// A removal of a name that the snapshots do not hold (a name that
// appeared after them: a rename and then an unlink of the new name, or a
// create and an unlink) is a synced fine record. After resnapshotMisses
// such misses, and at least one per 256 names (a large directory costs
// more to read and to append), the next miss takes a new snapshot
// instead, which covers the names that appeared meanwhile: a workload
// that renames a directory's files and then deletes them pays one more
// snapshot, not a sync per file. A workload whose every removal misses
// (create a temporary name, rename it away) pays at most one snapshot per
// resnapshotMisses syncs. A snapshot costs one sync too, plus reading the
// directory: with 16 misses and one per 64 names, 4 processes unlinking
// their renamed files (1,000 per directory) made 45 journal syncs; with
// 4 and 256, 11.
const resnapshotMisses = 4

// resnapshotPerNames: a directory of n names takes a new snapshot after
// n/resnapshotPerNames misses at the earliest.
const resnapshotPerNames = 256

// snapshot is the names state of an OpNames entry: the union of every
// snapshot of its directory in its period, all durable.
type snapshot struct {
	names atomic.Pointer[[]string] // sorted; nil: no snapshot (too big, or the listing failed)

	mu     sync.Mutex // guards misses; held while a new snapshot is taken and appended
	misses int        // removals that the names did not cover since the last snapshot
}

// has reports whether a durable snapshot holds the name of path.
func (s *snapshot) has(path string) bool {
	names := s.names.Load()
	if names == nil {
		return false
	}
	_, ok := slices.BinarySearch(*names, baseName(path))
	return ok
}

// readSnapshot lists dir in BACKING and returns its names, sorted, and the
// chunk records that carry them, or ok=false if it cannot (too big, or
// the listing failed).
func (t *Tracker) readSnapshot(period uint64, dir string, now time.Time) (names []string, recs []*Record, ok bool) {
	names, recs, _, ok = t.readSnapshotDirs(period, dir, now)
	return names, recs, ok
}

// readSnapshotDirs is readSnapshot that also returns the subdirectories
// of dir, as paths, if the Backing can tell (TypedLister).
func (t *Tracker) readSnapshotDirs(period uint64, dir string, now time.Time) (names []string, recs []*Record, subdirs []string, ok bool) {
	prefix := dirPrefix(dir)
	size, tooBig := 0, false
	add := func(p string, isDir bool) {
		if tooBig || !strings.HasPrefix(p, prefix) {
			return
		}
		n := p[len(prefix):]
		size += len(n) + 1
		if len(names) >= maxSnapshotNames || size > maxSnapshotBytes {
			tooBig = true
			return
		}
		names = append(names, n)
		if isDir {
			subdirs = append(subdirs, p)
		}
	}
	var err error
	if tl, ok := t.backing.(TypedLister); ok {
		err = tl.ListTyped(dir, add)
	} else {
		err = t.listDir(dir, func(p string) { add(p, false) })
	}
	if err != nil || tooBig {
		return nil, nil, nil, false
	}
	slices.Sort(names)
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			recs = append(recs, &Record{Period: period, Run: t.run, Op: OpNames, Flags: FlagDir,
				Time: now, Path: dir, Path2: b.String()})
			b.Reset()
		}
	}
	for _, n := range names {
		if b.Len() > 0 && b.Len()+1+len(n) > snapshotChunk {
			flush()
		}
		if b.Len() > 0 {
			b.WriteByte(0)
		}
		b.WriteString(n)
	}
	flush()
	if names == nil {
		names = []string{} // an empty directory: the snapshot exists
	}
	return names, recs, subdirs, true
}

// takeSnapshot fills e, a fresh OpNames entry, with the names that its
// directory holds now, and returns the chunk records that carry them (to
// be appended with e.rec, in the same batch). If it cannot, e holds no
// names and nothing but the header is recorded: every removal in the
// directory is then a synced fine record.
func (t *Tracker) takeSnapshot(e *entry) (recs []*Record, subdirs []string) {
	e.snap = new(snapshot)
	names, recs, subdirs, ok := t.readSnapshotDirs(e.rec.Period, e.rec.Path, e.rec.Time)
	if ok {
		e.snap.names.Store(&names)
	}
	return recs, subdirs
}

// takeAhead takes the snapshots ahead of a fresh snapshot whose directory
// has the subdirectories subdirs (see the top of this file): fresh OpNames
// entries, already in set, with no reference, and the records (headers
// and chunks) that make them durable, to be appended in the same batch.
// The caller closes their ready channels once the batch is durable, as
// for its own fresh entries.
func (t *Tracker) takeAhead(set *dedupSet, e *entry, subdirs []string) (ahead []*entry, recs []*Record) {
	names := 0
	for len(subdirs) > 0 && len(ahead) < aheadDirs && names < aheadNames {
		dir := subdirs[0]
		subdirs = subdirs[1:]
		k := dedupKey{op: OpNames, flags: FlagDir, path: dir}
		sh := &set.shards[set.shard(&k)]
		sh.mu.Lock()
		taken := sh.m[k] != nil
		sh.mu.Unlock()
		if taken {
			continue // it and what is beneath it are covered already
		}
		pe := &entry{ready: make(chan struct{}), snap: new(snapshot),
			rec: Record{Period: e.rec.Period, Run: t.run, Op: OpNames, Flags: FlagDir, Time: e.rec.Time, Path: dir}}
		// Read before the entry is in the set: a removal that finds it
		// there must find the names it will be tested against.
		sn, chunks, below, ok := t.readSnapshotDirs(pe.rec.Period, dir, pe.rec.Time)
		if !ok {
			continue
		}
		pe.snap.names.Store(&sn)
		sh.mu.Lock()
		if sh.m[k] != nil {
			sh.mu.Unlock()
			continue // a removal in dir got there first
		}
		sh.m[k] = pe
		sh.mu.Unlock()
		ahead = append(ahead, pe)
		recs = append(recs, &pe.rec)
		recs = append(recs, chunks...)
		names += len(sn)
		subdirs = append(subdirs, below...) // breadth first
	}
	return ahead, recs
}

// covered reports whether the snapshots of e (an OpNames entry, durable)
// hold the name of path, taking a new snapshot when misses have piled up
// (see resnapshotMisses). It returns only once that snapshot is durable.
func (t *Tracker) covered(e *entry, path string) bool {
	s := e.snap
	if s == nil {
		return false
	}
	if s.has(path) || (t.mutAllInSnapshot && s.names.Load() != nil) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.names.Load()
	if old == nil {
		return false
	}
	if s.has(path) {
		return true // another removal took a new snapshot meanwhile
	}
	s.misses++
	if s.misses <= max(t.resnapshotAfter, len(*old)/resnapshotPerNames) {
		return false
	}
	names, recs, ok := t.readSnapshot(e.rec.Period, e.rec.Path, time.Now())
	if !ok {
		return false
	}
	if err := t.append(recs); err != nil {
		// The removal falls back to a synced record, which reports
		// the journal's error if it persists.
		t.log.Warn("journal: recording a names snapshot failed", "dir", e.rec.Path, "err", err)
		return false
	}
	// The union: a name in the older snapshot is listed after a crash
	// whatever the newer one says.
	union := slices.Concat(*old, names)
	slices.Sort(union)
	union = slices.Compact(union)
	s.names.Store(&union)
	s.misses = 0
	return s.has(path)
}

// snapshotNames returns the names of a chunk record.
func snapshotNames(r *Record) []string { return strings.Split(r.Path2, "\x00") }

// queueFine appends the fine records that period p does not have yet.
func (t *Tracker) queueFine(p uint64, fine []Intent) {
	set := t.ps.set(p)
	var recs []*Record
	now := time.Now()
	for _, in := range fine {
		k := dedupKey{op: in.Op, flags: in.Flags, ino: in.Ino, path: in.Path, path2: in.Path2}
		sh := &set.shards[set.shard(&k)]
		sh.mu.Lock()
		if sh.m[k] == nil {
			// The set only needs to know the key: one shared value
			// for every fine record keeps a big period small.
			sh.m[k] = fineEntry
			recs = append(recs, &Record{Period: p, Run: t.run, Op: in.Op, Flags: in.Flags | FlagFine, Ino: in.Ino,
				Time: now, Path: in.Path, Path2: in.Path2})
		}
		sh.mu.Unlock()
	}
	if len(recs) > 0 {
		t.queuedRecs.Add(uint64(len(recs)))
		t.async.AppendAsync(recs)
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// fineEntry stands for every fine record in the dedup sets.
var fineEntry = &entry{ready: closedChan}

// completer records the completions of idle intents after a short delay.
type completer struct {
	t     *Tracker
	delay time.Duration

	mu   sync.Mutex // guards list and done
	list []*entry
	done bool

	wake chan struct{}
	quit chan struct{} // closed by stop: no more waiting
	exit chan struct{}
}

func newCompleter(t *Tracker, delay time.Duration) *completer {
	if delay <= 0 {
		delay = 10 * time.Millisecond
	}
	c := &completer{t: t, delay: delay, wake: make(chan struct{}, 1), quit: make(chan struct{}), exit: make(chan struct{})}
	go c.run()
	return c
}

func (c *completer) add(e *entry) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		c.complete([]*entry{e})
		return
	}
	c.list = append(c.list, e)
	select { // under mu: stop closes wake under mu
	case c.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
}

func (c *completer) take() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.list
	c.list = nil
	return l
}

func (c *completer) run() {
	defer close(c.exit)
	for range c.wake {
		for wait := c.delay; wait > 0; {
			select {
			case <-time.After(wait):
			case <-c.quit:
				return // stop completes what is left
			}
			wait = c.completeIdle(c.take())
		}
	}
}

// holdCurrent is how long an idle intent of the current period waits for
// its completion. Only an intent of the current period can be joined
// again, and joining a completed one costs a synced Reopen: a path
// written again and again (open, write, close in a loop) must keep its
// one intent open, even with pauses, or the repeated writes would cost a
// sync each. Intents of older periods are completed after the short delay.
const holdCurrent = time.Second

// completeIdle completes the entries, in the order they went idle, that
// have been idle long enough, and puts the rest back. It returns how long
// to wait for the next one, or 0 if none is left.
func (c *completer) completeIdle(es []*entry) time.Duration {
	now := time.Now()
	cur := c.t.ps.cur.Load()
	for i, e := range es {
		e.mu.Lock()
		hold := c.delay
		if e.rec.Period == cur {
			hold = max(c.delay, holdCurrent)
		}
		wait := hold - now.Sub(e.idleSince)
		pending := e.refs == 0 && !e.completed && wait > 0
		e.mu.Unlock()
		if !pending {
			c.complete([]*entry{e})
			continue
		}
		// The rest went idle later (roughly): look again when this
		// one is due.
		c.mu.Lock()
		c.list = append(es[i:len(es):len(es)], c.list...)
		c.mu.Unlock()
		return max(wait, c.delay)
	}
	return 0
}

func (c *completer) complete(es []*entry) {
	for _, e := range es {
		e.mu.Lock()
		e.queued = false
		if e.refs == 0 && !e.completed {
			if err := c.t.store.Complete(e.rec.Period, e.rec.Seq); err != nil {
				// Only costs accuracy: the intent is reported in
				// flight after a crash.
				c.t.log.Warn("journal: recording completion failed", "path", e.rec.Path, "err", err)
			} else {
				e.completed = true
			}
		}
		e.mu.Unlock()
	}
}

// stop records every pending completion now and ends the goroutine.
func (c *completer) stop() {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	close(c.wake)
	close(c.quit)
	c.mu.Unlock()
	<-c.exit
	c.complete(c.take())
}

// flush records every pending completion now (tests, clean shutdown).
func (c *completer) flush() { c.complete(c.take()) }

// dirPrefix is what the paths beneath dir start with.
func dirPrefix(dir string) string {
	if dir == "" {
		return ""
	}
	return dir + "/"
}
