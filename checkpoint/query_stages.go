package checkpoint

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// The stages of a query (Tracker.query), in the order they run.

// queryRun is one query's work: the paths found so far, and what the
// scan of the journal handed to the later stages.
type queryRun struct {
	P     uint64
	st    State  // after the query started P
	cur   cursor // the consumer's
	paths map[string]*agg
	// From the scan: renames to expand, directory intents and
	// rosters (with whether each was in flight), and the names that
	// links and renames gave each inode.
	renames       []*Record
	carried       []*Record // this consumer's renamed directories carried into its window
	entryRecs     []*Record
	entryInflight []bool
	linkHints     map[uint64][]string
	// From the old names: the renamed directories to carry into P.
	carry []carried
	// tree is what each directory held, by inode (oldnames.go);
	// dirIntentsAnswered: answerDirIntents answered for fine records
	// that may be lost, which the tree does not see.
	tree               *inoTree
	dirIntentsAnswered bool
	// cutoff: a record with a higher Seq began after the copy that the
	// consumer's last bless covered (oldnames.go, relevant): Store.LastSeq
	// at that bless if no answer was returned since, else the highest
	// Seq (not known).
	cutoff    uint64
	pathsOnly bool // QueryOptions.PathsOnly
	// Slabs for the aggs and their first inode: a million paths are a
	// thousand allocations, not two million (the collector's work
	// during a query grows with the objects, not the bytes).
	aggSlab []agg
	inoSlab []uint64
	// abandoned is QueryOptions.Abandoned (never nil), and says true
	// once the paths pass limit too (overflow).
	abandoned func() bool
	// records is how many records the scan read; limit, if not 0, is
	// the most paths the answer may list (query.go, "Whole answers").
	records  int
	limit    int
	overflow bool
}

func (t *Tracker) newQueryRun(name string, P uint64) *queryRun {
	st := t.stateNow()
	cur, _ := st.cursor(name)
	// Sized like this consumer's last answer: growing a map of a
	// million paths rehashes it twenty times.
	hint := min(t.answerSizes[name], maxPathsHint)
	// Where the copy may have got what it holds (oldnames.go, relevant):
	// before the bless if the last answer was blessed; else at any time
	// (before the first answer too: a copy may have been made after the
	// mount).
	cutoff := uint64(math.MaxUint64)
	if cur.blessSeq != 0 && cur.lastQuery == cur.lastBlessed {
		cutoff = cur.blessSeq
	}
	return &queryRun{P: P, st: st, cur: cur, paths: make(map[string]*agg, hint), linkHints: make(map[uint64][]string),
		tree: newInoTree(), cutoff: cutoff, abandoned: func() bool { return false }}
}

// maxPathsHint caps the map's initial size (a few hundred MiB).
const maxPathsHint = 10_000_000

const slabLen = 1024

// pause waits d (Options.SlowQuery), or until the query is abandoned.
func (q *queryRun) pause(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end) && !q.abandoned(); {
		time.Sleep(10 * time.Millisecond)
	}
}

func (q *queryRun) newAgg(period uint64) *agg {
	if len(q.aggSlab) == 0 {
		q.aggSlab = make([]agg, slabLen)
	}
	a := &q.aggSlab[0]
	q.aggSlab = q.aggSlab[1:]
	a.period = period
	return a
}

// firstIno returns a slice of length and capacity 1 holding ino: a
// second inode appends to a copy.
func (q *queryRun) firstIno(ino uint64) []uint64 {
	if len(q.inoSlab) == 0 {
		q.inoSlab = make([]uint64, slabLen)
	}
	s := q.inoSlab[:1:1]
	q.inoSlab = q.inoSlab[1:]
	s[0] = ino
	return s
}

// add lists p for the record r.
func (q *queryRun) add(p string, r *Record, inflight bool) *agg {
	if p == "" {
		return nil
	}
	a := q.paths[p]
	if a == nil {
		a = q.newAgg(r.Period)
		q.paths[p] = a
	}
	a.ops |= 1 << r.Op
	if r.Period < a.period {
		a.period = r.Period
	}
	a.inflight = a.inflight || inflight
	if r.Ino != 0 {
		// The latest file modified under this name; all of them go
		// to Inos, for a consumer looking for other names.
		a.ino = r.Ino
		if a.inos == nil {
			a.inos = q.firstIno(r.Ino)
		} else if !slices.Contains(a.inos, r.Ino) {
			a.inos = append(a.inos, r.Ino)
		}
	}
	return a
}

// found lists p as derived by this query from BACKING as it is now.
func (q *queryRun) found(p string, r *Record, inflight bool) {
	if a := q.add(p, r, inflight); a != nil {
		a.derived = true
	}
}

// recorded lists p as named by a record of this consumer's.
func (q *queryRun) recorded(p string, r *Record, inflight bool) {
	if a := q.add(p, r, inflight); a != nil {
		a.recorded = true
		a.real = a.real || r.Flags&FlagDerived == 0
	}
}

// scanRecords lists every path that a record from the consumer's last
// bless names, and collects what the later stages need.
func (t *Tracker) scanRecords(q *queryRun) error {
	return scanAside(t.store, q.cur.lastBlessed, q.abandoned, func(r *Record, completed bool) {
		q.records++
		inflight := r.Run < t.run && !completed && r.Op != OpOutside
		if (r.Op == OpEntries && r.Flags&FlagDerived == 0) || r.Op == OpRoster {
			q.entryRecs = append(q.entryRecs, r)
			q.entryInflight = append(q.entryInflight, inflight)
			return
		}
		if r.Flags&FlagFine != 0 {
			inflight = false // the directory intent carries it
		}
		if r.Flags&FlagCarried != 0 {
			// Not a path to list: a rename for the old names
			// (renames.go), this consumer's only.
			if r.Consumer == q.cur.name {
				q.carried = append(q.carried, r)
			}
			return
		}
		if r.Flags&FlagDerived != 0 {
			// What another consumer's query derived is listed here
			// too, but as a path found now, not as this consumer's
			// own derivation: its old names are this consumer's to
			// find (renames.go maps only paths it has not derived
			// itself).
			if r.Consumer != q.cur.name {
				q.add(r.Path, r, inflight)
				return
			}
			q.recorded(r.Path, r, inflight)
			return
		}
		q.recorded(pathOf(r), r, inflight)
		q.recorded(r.Path2, r, inflight)
		// Every rename is expanded, not only those whose source was a
		// directory when its intent was taken: walking a name that is
		// not a directory costs one failed open.
		if r.Op == OpRename {
			q.renames = append(q.renames, r)
		}
		if r.Op == OpRename || r.Op == OpUnlink || r.Op == OpRmdir || r.Op == OpMkdir {
			q.tree.recordEdges(r)
		}
		if (r.Op == OpLink || r.Op == OpRename) && r.Ino != 0 && r.Flags&FlagDir == 0 {
			q.linkHints[r.Ino] = append(q.linkHints[r.Ino], r.Path, r.Path2)
		}
	})
}

// pathOf is the path that a record names: "." for the root, whose own
// mode, owner, times or xattrs changed (rsync takes "." for it; such an
// intent is never coarse, see coarsen).
func pathOf(r *Record) string {
	if r.Path == "" && r.Op >= OpChmod && r.Op <= OpRemovexattr {
		return "."
	}
	return r.Path
}

// expandRenames lists everything beneath both names of every rename, as
// it is in BACKING now: rsync with --files-from does not recurse, so a
// renamed directory must bring every path beneath its new name (and,
// for an exchange, beneath both names). Each name is walked once, for
// the first rename that names it (the earliest period); the paths
// beneath it are not the renamed object, so they get no inode from it.
func (t *Tracker) expandRenames(q *queryRun) error {
	walked := make(map[string]bool)
	for _, r := range q.renames {
		beneath := *r
		beneath.Ino = 0
		for _, top := range []string{r.Path, r.Path2} {
			if top == "" || walked[top] {
				continue
			}
			walked[top] = true
			if err := t.walkTree(q.tree, top, func(p string) { q.found(p, &beneath, false) }); err != nil {
				return fmt.Errorf("expand renamed directory %q: %w", top, err)
			}
		}
	}
	return nil
}

// answerDirIntents answers the directory intents and rosters
// where their fine records may be missing: runs that ended uncleanly,
// and this run if queued fine records were lost (the scan itself may
// have found that out, so this is asked after it). A directory intent
// lists the directory's entries now; a roster, the names it
// holds; a new directory's census, expandNewDirs.
func (t *Tracker) answerDirIntents(q *queryRun) error {
	lost := t.async != nil && t.async.Lost()
	var dirIntents []*Record
	var dirInflight []bool
	for i, r := range q.entryRecs {
		if r.Run <= q.st.LastUncleanRun || (lost && r.Run == t.run) {
			dirIntents = append(dirIntents, r)
			dirInflight = append(dirInflight, q.entryInflight[i])
			q.dirIntentsAnswered = true
		}
	}
	// A roster's or census's chunks share its header's in-flight state.
	type dirKey struct {
		period uint64
		path   string
	}
	snapInflight := make(map[dirKey]bool)
	entInflight := make(map[censusKey]bool) // directory intents, for their censuses
	for i, r := range dirIntents {
		if r.Op == OpRoster && r.Flags&FlagNames == 0 {
			snapInflight[dirKey{r.Period, r.Path}] = dirInflight[i]
		}
		if r.Op == OpEntries && r.Flags&FlagNames == 0 {
			entInflight[censusKey{r.Period, r.Run, r.Path}] = dirInflight[i]
		}
	}
	for i, r := range dirIntents {
		if entriesChunk(r) {
			continue // expandNewDirs, below
		}
		rr, inflight := *r, dirInflight[i]
		rr.Op = OpEntries // reported as "entries" whichever kind it is
		if r.Op == OpRoster && r.Flags&FlagNames != 0 {
			// A chunk has no completion of its own.
			inflight = snapInflight[dirKey{r.Period, r.Path}]
		}
		q.found(r.Path, &rr, inflight)
		if r.Op == OpRoster {
			if r.Flags&FlagNames == 0 {
				continue // a header: its chunks hold the names
			}
			for _, n := range chunkNames(r) {
				q.found(dirPrefix(r.Path)+n, &rr, inflight)
			}
			continue
		}
		if err := t.listDir(r.Path, func(p string) { q.found(p, &rr, inflight) }); err != nil {
			return fmt.Errorf("list %q: %w", r.Path, err)
		}
	}
	if err := t.expandNewDirs(dirIntents, entInflight, func(p string, r *Record, inflight bool) { q.found(p, r, inflight) }); err != nil {
		return fmt.Errorf("expand new directories: %w", err)
	}
	return nil
}

// sortPaths hands the paths over sorted, with their aggs in the same
// order; q.paths is dropped.
func (q *queryRun) sortPaths() ([]string, []*agg) {
	keys, aggs := sortedPaths(q.paths)
	q.paths = nil
	return keys, aggs
}

// statPaths stats each of the sorted paths keys (type, inode, link
// count) for the answer. aggs[i] is the agg of ans.Entries[i] from here
// on.
func (t *Tracker) statPaths(q *queryRun, keys []string, aggs []*agg) (*Answer, []*agg) {
	ans := &Answer{Query: q.P, Blessed: q.cur.lastBlessed, BlessedBy: q.cur.blessedBy, Recovered: q.cur.recoveredAt != 0,
		Full: q.cur.full, Reset: q.cur.reset, pathsOnly: q.pathsOnly}
	// Sorted, siblings are neighbours: a batch statter opens each
	// directory once.
	stat := func(fn func(i int, typ FileType, ino uint64, nlink uint32)) {
		for i, p := range keys {
			typ, ino, nlink := t.backing.Lstat(p)
			fn(i, typ, ino, nlink)
		}
	}
	if bs, ok := t.backing.(BatchLstater); ok {
		// A paths-only answer needs a path's own stat only to find
		// the other names of a modified file (links.go).
		need := func(i int) bool { return !q.pathsOnly || aggs[i].ops&inodeOps != 0 }
		stat = func(fn func(i int, typ FileType, ino uint64, nlink uint32)) { bs.LstatSorted(keys, need, fn) }
	}
	ans.Entries = make([]Entry, len(keys))
	// A million entries share a handful of op lists, made before the
	// stat callbacks, which may run concurrently (read-only from here).
	opLists := make(map[uint32][]string)
	for _, a := range aggs {
		if _, ok := opLists[a.ops]; !ok {
			opLists[a.ops] = opList(a.ops)
		}
	}
	stat(func(i int, typ FileType, ino uint64, nlink uint32) {
		a := aggs[i]
		a.nowIno, a.nowNlink = ino, nlink
		// The recorded inode is the one that was modified; the path
		// may hold another file now (renamed over it). With it, a
		// consumer can find the other names of a file with links.
		if a.ino != 0 && a.ino != ino {
			ino, nlink = a.ino, 0
		}
		shadowed := typ == TypeShadowed
		if shadowed {
			typ = TypeGone
		}
		ans.Entries[i] = Entry{Path: keys[i], Type: typ.String(), Ops: opLists[a.ops],
			Period: a.period, Inflight: a.inflight, Ino: ino, Nlink: nlink, Inos: a.inos, shadowed: shadowed}
	})
	return ans, aggs
}

// dropSeenShadows leaves out a shadowed path kept only by its own shadow
// record (from an earlier answer, now blessed): it has been seen through
// one more round. A shadowed path that this query derived (a roster's
// name, beneath a renamed directory) stays: what it is derived from is
// unblessed. aggs stays parallel to the entries.
func dropSeenShadows(ans *Answer, aggs []*agg) (*Answer, []*agg) {
	kept := 0
	for i := range ans.Entries {
		if ans.Entries[i].shadowed && !aggs[i].real && !aggs[i].derived {
			continue
		}
		ans.Entries[kept], aggs[kept] = ans.Entries[i], aggs[i]
		kept++
	}
	clear(ans.Entries[kept:])
	ans.Entries, aggs = ans.Entries[:kept], aggs[:kept]
	return ans, aggs
}

// sortedPaths returns m's keys sorted bytewise and their aggs in the same
// order: the query then never looks a path up again. A large map is
// sorted in two halves at once and merged.
func sortedPaths(m map[string]*agg) ([]string, []*agg) {
	type pa struct {
		p string
		a *agg
	}
	pairs := make([]pa, 0, len(m))
	for k, a := range m {
		pairs = append(pairs, pa{k, a})
	}
	cmp := func(x, y pa) int { return strings.Compare(x.p, y.p) }
	keys, aggs := make([]string, len(pairs)), make([]*agg, len(pairs))
	if len(pairs) < 1<<16 {
		slices.SortFunc(pairs, cmp)
		for i := range pairs {
			keys[i], aggs[i] = pairs[i].p, pairs[i].a
		}
		return keys, aggs
	}
	lo, hi := pairs[:len(pairs)/2], pairs[len(pairs)/2:]
	var wg sync.WaitGroup
	wg.Go(func() { slices.SortFunc(lo, cmp) })
	slices.SortFunc(hi, cmp)
	wg.Wait()
	// Map keys are unique: no ties to order.
	for i := range keys {
		var x pa
		if len(hi) == 0 || (len(lo) > 0 && lo[0].p < hi[0].p) {
			x, lo = lo[0], lo[1:]
		} else {
			x, hi = hi[0], hi[1:]
		}
		keys[i], aggs[i] = x.p, x.a
	}
	return keys, aggs
}
