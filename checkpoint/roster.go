package checkpoint

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rosters (coarse mode, coarse.go): the names a directory held when
// its first removal of a period began, so that removals need no synced
// record of their own.

// A removal of a name that the rosters do not hold (a name that
// appeared after them: a rename and then an unlink of the new name, or a
// create and an unlink) is a synced fine record. After reRosterMisses
// such misses, and at least one per 256 names (a large directory costs
// more to read and to append), the next miss takes a new roster
// instead, which covers the names that appeared meanwhile: a workload
// that renames a directory's files and then deletes them pays one more
// roster, not a sync per file. A workload whose every removal misses
// (create a temporary name, rename it away) pays at most one roster per
// reRosterMisses syncs. A roster costs one sync too, plus reading the
// directory: with 16 misses and one per 64 names, 4 processes unlinking
// their renamed files (1,000 per directory) made 45 journal syncs; with
// 4 and 256, 11.
const reRosterMisses = 4

// reRosterPerNames: a directory of n names takes a new roster after
// n/reRosterPerNames misses at the earliest.
const reRosterPerNames = 256

// roster is the names state of an OpRoster entry: the union of every
// roster of its directory in its period, all durable.
type roster struct {
	names atomic.Pointer[[]string] // sorted; nil: no roster (too big, or the listing failed)

	mu     sync.Mutex // guards misses; held while a new roster is taken and appended
	misses int        // removals that the names did not cover since the last roster
}

// has reports whether a durable roster holds the name of path.
func (s *roster) has(path string) bool {
	names := s.names.Load()
	if names == nil {
		return false
	}
	_, ok := slices.BinarySearch(*names, baseName(path))
	return ok
}

// dirNames lists dir in BACKING and returns its names, sorted, and the
// chunk records that carry them, or ok=false if it cannot (too big, or
// the listing failed).
func (t *Tracker) dirNames(period uint64, dir string, now time.Time) (names []string, recs []*Record, ok bool) {
	names, recs, _, ok = t.dirNamesAndSubdirs(period, dir, now)
	return names, recs, ok
}

// dirNamesAndSubdirs is dirNames that also returns the subdirectories
// of dir, as paths, if the Backing can tell (TypedLister).
func (t *Tracker) dirNamesAndSubdirs(period uint64, dir string, now time.Time) (names []string, recs []*Record, subdirs []string, ok bool) {
	prefix := dirPrefix(dir)
	size, tooBig := 0, false
	add := func(p string, isDir bool) {
		if tooBig || !strings.HasPrefix(p, prefix) {
			return
		}
		n := p[len(prefix):]
		size += len(n) + 1
		if len(names) >= maxListNames || size > maxListBytes {
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
	// Chunks of at most namesChunk bytes of names each.
	var chunk []string
	size = 0
	flush := func() {
		if len(chunk) > 0 {
			recs = append(recs, &Record{Period: period, Run: t.run, Op: OpRoster, Flags: FlagDir | FlagNames,
				Time: now, Path: dir, Names: chunk})
			chunk, size = nil, 0
		}
	}
	for _, n := range names {
		if len(chunk) > 0 && size+1+len(n) > namesChunk {
			flush()
		}
		chunk = append(chunk, n)
		size += 1 + len(n)
	}
	flush()
	if names == nil {
		names = []string{} // an empty directory: the roster exists
	}
	return names, recs, subdirs, true
}

// takeRoster fills e, a fresh OpRoster entry, with the names that its
// directory holds now, and returns the chunk records that carry them (to
// be appended with e.rec, in the same batch). If it cannot, e holds no
// names and nothing but the header is recorded: every removal in the
// directory is then a synced fine record.
func (t *Tracker) takeRoster(e *sharedIntent) (recs []*Record, subdirs []string) {
	e.roster = new(roster)
	names, recs, subdirs, ok := t.dirNamesAndSubdirs(e.rec.Period, e.rec.Path, e.rec.Time)
	if ok {
		e.roster.names.Store(&names)
	}
	return recs, subdirs
}

// takeAhead takes the rosters ahead of a fresh roster whose directory
// has the subdirectories subdirs (see the top of this file): fresh OpRoster
// entries, already in set, with no reference, and the records (headers
// and chunks) that make them durable, to be appended in the same batch.
// The caller closes their ready channels once the batch is durable, as
// for its own fresh entries.
func (t *Tracker) takeAhead(set *dedupSet, e *sharedIntent, subdirs []string) (ahead []*sharedIntent, recs []*Record) {
	names := 0
	for len(subdirs) > 0 && len(ahead) < aheadDirs && names < aheadNames {
		dir := subdirs[0]
		subdirs = subdirs[1:]
		k := keyOf(OpRoster, FlagDir, 0, dir, "")
		if set.get(k) != nil {
			continue // it and what is beneath it are covered already
		}
		pe := &sharedIntent{ready: make(chan struct{}), roster: new(roster),
			rec: Record{Period: e.rec.Period, Run: t.run, Op: OpRoster, Flags: FlagDir, Time: e.rec.Time, Path: dir}}
		// Read before the entry is in the set: a removal that finds it
		// there must find the names it will be tested against.
		sn, chunks, below, ok := t.dirNamesAndSubdirs(pe.rec.Period, dir, pe.rec.Time)
		if !ok {
			continue
		}
		pe.roster.names.Store(&sn)
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

// covered reports whether the rosters of e (an OpRoster entry, durable)
// hold the name of path, taking a new roster when misses have piled up
// (see reRosterMisses). It returns only once that roster is durable.
func (t *Tracker) covered(e *sharedIntent, path string) bool {
	s := e.roster
	if s == nil {
		return false
	}
	if s.has(path) || (t.tune.mutAllOnRoster && s.names.Load() != nil) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.names.Load()
	if old == nil {
		return false
	}
	if s.has(path) {
		return true // another removal took a new roster meanwhile
	}
	s.misses++
	if s.misses <= max(t.tune.reRosterAfter, len(*old)/reRosterPerNames) {
		return false
	}
	names, recs, ok := t.dirNames(e.rec.Period, e.rec.Path, time.Now())
	if !ok {
		return false
	}
	if err := t.append(recs); err != nil {
		// The removal falls back to a synced record, which reports
		// the journal's error if it persists.
		t.log.Warn("journal: recording a roster failed", "dir", e.rec.Path, "err", err)
		return false
	}
	// The union: a name in the older roster is listed after a crash
	// whatever the newer one says.
	union := slices.Concat(*old, names)
	slices.Sort(union)
	union = slices.Compact(union)
	s.names.Store(&union)
	s.misses = 0
	return s.has(path)
}

// chunkNames returns the names of a chunk record.
func chunkNames(r *Record) []string { return r.Names }
