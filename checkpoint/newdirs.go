package checkpoint

import (
	"slices"
	"time"
)

// New directories (coarse mode).
//
// An untar or a cp -r creates a tree of new directories, and a directory
// intent per new directory would cost a sync per directory (1,333 for the
// Go toolchain's src/). But everything inside a directory that did not
// exist when the period began is new, and a durable statement of which
// names a directory A held covers all of it:
//
//   - The first mkdir in A of a period (of this run) reads A's names and
//     appends them, synced, as the census of A's directory
//     intent: chunk records OpEntries, A, FlagNames, with the names in
//     Names (none for an empty directory). It is read before the mkdir's intent returns, so before the
//     new directory exists. It is taken once per directory intent and
//     never changed.
//   - A modification in a directory D that has no directory intent of its
//     own in the period is covered by the directory intent of an ancestor
//     A of D whose census does not hold the name N of the child
//     of A that D is in (or is): A/N did not exist when the census was
//     read, so everything beneath it was created since. The modification
//     holds A's intent (so a crash reports it in flight), and D's key in
//     the dedup set points at A's entry from then on.
//   - After an unclean end, a query answers a directory intent of A with
//     a census S as usual (A and its entries) and, for every
//     entry A/N that is a directory with N not in S, every path beneath
//     A/N. With several censuses of A (one per period and run), each is
//     applied on its own: a directory missing from any of them is walked.
//
// Why the membership test uses exactly the census that was read: a name
// N in S existed when S was read, and a directory created under that name
// later (after N was removed) is not new by this rule; its own directory
// intent covers it. A census taken later (a union) could hold a name
// that the earlier one did not, and would hide a directory that was
// already treated as new. So a census is never extended, and the query
// keeps censuses of different runs apart.

// durableNow reports whether e's Append has returned without an error.
func durableNow(e *sharedIntent) bool {
	select {
	case <-e.ready:
		return e.err == nil
	default:
		return false
	}
}

// newDirCover returns the directory intent that covers modifications in
// dir as a new directory, or nil.
func (t *Tracker) newDirCover(set *dedupSet, dir string) *sharedIntent {
	for child := dir; child != ""; {
		a := parentDir(child)
		if e := set.get(keyOf(OpEntries, FlagDir, 0, a, "")); e != nil && durableNow(e) {
			if e.rec.Path != a {
				return e // a is itself new beneath e's directory
			}
			if names := e.census.Load(); names != nil {
				if _, held := slices.BinarySearch(*names, baseName(child)); !held {
					return e
				}
			}
		}
		child = a
	}
	return nil
}

// coverNewDirs points the keys of the directory intents in durable that
// the period does not have yet, and that a new directory's ancestor
// covers, at that ancestor's entry: acquireDurable then joins it.
func (t *Tracker) coverNewDirs(p uint64, durable []Intent) {
	set := t.ps.set(p)
	for _, in := range durable {
		if in.Op != OpEntries || in.Path == "" {
			continue
		}
		k := keyOf(in.Op, in.Flags, 0, in.Path, "")
		if set.get(k) != nil {
			continue
		}
		if e := t.newDirCover(set, in.Path); e != nil {
			set.putIfAbsent(k, e)
		}
	}
}

// censusForMkdirs takes the census of the directory of every
// mkdir in fine whose directory intent (in es, parallel to durable) has
// none yet. A failure costs only the new-directory coverage: the mkdir
// itself is covered by the durable directory intent.
func (t *Tracker) censusForMkdirs(es []*sharedIntent, durable, fine []Intent) {
	for _, in := range fine {
		if in.Op != OpMkdir {
			continue
		}
		dir := parentDir(in.Path)
		i := slices.IndexFunc(durable, func(d Intent) bool { return d.Op == OpEntries && d.Path == dir })
		if i < 0 || es[i] == nil || es[i].rec.Path != dir {
			continue // covered as new beneath an ancestor: nothing to read
		}
		t.takeCensus(es[i])
	}
}

// takeCensus reads and appends e's census, once.
func (t *Tracker) takeCensus(e *sharedIntent) {
	if e.census.Load() != nil {
		return
	}
	e.censusMu.Lock()
	defer e.censusMu.Unlock()
	if e.census.Load() != nil {
		return
	}
	names, chunks, ok := t.dirNames(e.rec.Period, e.rec.Path, time.Now())
	if !ok {
		return
	}
	for _, r := range chunks {
		r.Op = OpEntries
	}
	if len(chunks) == 0 {
		// An empty directory: one chunk holding no name says so.
		chunks = []*Record{{Period: e.rec.Period, Run: t.run, Op: OpEntries, Flags: FlagDir | FlagNames,
			Time: time.Now(), Path: e.rec.Path}}
	}
	if err := t.append(chunks); err != nil {
		t.log.Warn("journal: recording a census failed", "dir", e.rec.Path, "err", err)
		return
	}
	e.census.Store(&names)
}

// entriesChunk reports whether r is a chunk of a census.
func entriesChunk(r *Record) bool { return r.Op == OpEntries && r.Flags&FlagNames != 0 }

// entriesNames returns the names of a census chunk (none for an empty
// directory).
func entriesNames(r *Record) []string { return r.Names }

// censusKey identifies one census: a directory, in a period, by a run.
type censusKey struct {
	period, run uint64
	path        string
}

// expandNewDirs answers the censuses of dirIntents (see above):
// every path beneath a directory of A that a census of A does not hold.
// inflight gives the in-flight state of a directory intent's header.
func (t *Tracker) expandNewDirs(dirIntents []*Record, inflight map[censusKey]bool, add func(p string, r *Record, inflight bool)) error {
	snaps := make(map[censusKey][]string)
	var order []censusKey
	recs := make(map[censusKey]*Record)
	for _, r := range dirIntents {
		if !entriesChunk(r) {
			continue
		}
		k := censusKey{r.Period, r.Run, r.Path}
		if _, ok := snaps[k]; !ok {
			order = append(order, k)
			recs[k] = r
		}
		snaps[k] = append(snaps[k], entriesNames(r)...)
	}
	for _, k := range order {
		names := snaps[k]
		slices.Sort(names)
		rr := *recs[k]
		rr.Flags &^= FlagNames
		rr.Names = nil
		var fresh []string
		err := t.listDir(k.path, func(p string) {
			if _, held := slices.BinarySearch(names, baseName(p)); !held {
				fresh = append(fresh, p)
			}
		})
		if err != nil {
			return err
		}
		for _, top := range fresh {
			// Walk yields nothing beneath a name that is not a
			// directory.
			if err := t.backing.Walk(top, func(p string) { add(p, &rr, inflight[k]) }); err != nil {
				return err
			}
		}
	}
	return nil
}
