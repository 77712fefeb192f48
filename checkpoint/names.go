package checkpoint

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Names snapshots (coarse mode, coarse.go): what a directory held when
// its first removal of a period began, so that removals need no synced
// record of their own.

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
func (t *Tracker) takeSnapshot(e *sharedIntent) (recs []*Record, subdirs []string) {
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
func (t *Tracker) takeAhead(set *dedupSet, e *sharedIntent, subdirs []string) (ahead []*sharedIntent, recs []*Record) {
	names := 0
	for len(subdirs) > 0 && len(ahead) < aheadDirs && names < aheadNames {
		dir := subdirs[0]
		subdirs = subdirs[1:]
		k := keyOf(OpNames, FlagDir, 0, dir, "")
		if set.get(k) != nil {
			continue // it and what is beneath it are covered already
		}
		pe := &sharedIntent{ready: make(chan struct{}), snap: new(snapshot),
			rec: Record{Period: e.rec.Period, Run: t.run, Op: OpNames, Flags: FlagDir, Time: e.rec.Time, Path: dir}}
		// Read before the entry is in the set: a removal that finds it
		// there must find the names it will be tested against.
		sn, chunks, below, ok := t.readSnapshotDirs(pe.rec.Period, dir, pe.rec.Time)
		if !ok {
			continue
		}
		pe.snap.names.Store(&sn)
		if !set.putIfAbsent(k, pe) {
			continue // a removal in dir got there first
		}
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
func (t *Tracker) covered(e *sharedIntent, path string) bool {
	s := e.snap
	if s == nil {
		return false
	}
	if s.has(path) || (t.tune.mutAllInSnapshot && s.names.Load() != nil) {
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
	if s.misses <= max(t.tune.resnapshotAfter, len(*old)/resnapshotPerNames) {
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
