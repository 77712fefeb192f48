package checkpoint

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Entry is one path of a query's answer.
type Entry struct {
	Path     string
	Type     string // file, dir, symlink, other or gone (at query time)
	Ops      []string
	Period   uint64 // the first unblessed period that recorded it
	Inflight bool   // begun in an earlier run, completion never recorded
	Ino      uint64
	Nlink    uint32
	// Inos are the inodes that the records of this path modified (hard
	// links: a consumer looks for their other names), oldest first.
	Inos []uint64
	// shadowed: gone because an ancestor is not a directory any more.
	// That ancestor is listed too (it changed in an unblessed period), so
	// rsync replaces it and drops everything beneath; rsync would fail
	// on the path itself ("Not a directory").
	shadowed bool
}

// Shadowed reports whether the path is beneath an ancestor that is not a
// directory any more (left out of the plain answer).
func (e *Entry) Shadowed() bool { return e.shadowed }

// Answer is the result of one query.
type Answer struct {
	Query     uint64 // the id: the period that the query started
	Blessed   uint64 // the consumer's last completed bless when the query ran
	Recovered bool
	// Full: the consumer must copy the whole tree once (a new consumer,
	// or one reset by the lag policy), then bless this answer.
	Full bool
	// Reset: the lag policy dropped this consumer's backlog.
	Reset   bool
	Entries []Entry // sorted bytewise by Path, unique
}

type agg struct {
	ops      uint32 // bit per Op
	period   uint64
	inflight bool
	ino      uint64
	inos     []uint64 // every inode the records name, oldest first
	recorded bool     // a record names it
	real     bool     // a record of a modification names it (not a derivation)
	// What the path holds when the query runs (its lstat).
	nowIno   uint64
	nowNlink uint32
}

// Query runs one query as the contract describes: it starts period P,
// waits for the earlier periods to drain (files open for writing are
// re-recorded in P instead), and answers every path that a record of an
// unblessed period may have changed.
func (t *Tracker) Query() (*Answer, error) { return t.QueryFor("") }

// QueryFor is Query for the named consumer (DefaultConsumer or "" for
// the default): its answer starts at its own last bless.
func (t *Tracker) QueryFor(name string) (*Answer, error) {
	if t.onQuery == nil {
		return t.query(name)
	}
	start := time.Now()
	ans, err := t.query(name)
	n := 0
	if ans != nil {
		n = len(ans.Entries)
	}
	t.onQuery(time.Since(start), n, err)
	return ans, err
}

func (t *Tracker) query(name string) (*Answer, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if err := t.resetLaggards(time.Now()); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	t.warnLaggards(time.Now())
	before := t.snapshot()
	if _, err := before.cursor(name); err != nil {
		return nil, fmt.Errorf("query: %w", err) // before a period is started for nothing
	}
	P, err := t.advance()
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	st := t.snapshot()
	cur, _ := st.cursor(name)
	paths := make(map[string]*agg)
	add := func(p string, r *Record, inflight bool) *agg {
		if p == "" {
			return nil
		}
		a := paths[p]
		if a == nil {
			a = &agg{period: r.Period}
			paths[p] = a
		}
		a.ops |= 1 << r.Op
		if r.Period < a.period {
			a.period = r.Period
		}
		a.inflight = a.inflight || inflight
		if r.Ino != 0 {
			// The latest file modified under this name; all of them
			// go to Inos, for a consumer looking for other names.
			a.ino = r.Ino
			if !slices.Contains(a.inos, r.Ino) {
				a.inos = append(a.inos, r.Ino)
			}
		}
		return a
	}
	recorded := func(p string, r *Record, inflight bool) {
		if a := add(p, r, inflight); a != nil {
			a.recorded = true
			a.real = a.real || r.Flags&FlagDerived == 0
		}
	}
	var dirRenames, entryRecs, dirIntents []*Record
	var entryInflight, dirInflight []bool
	linkHints := make(map[uint64][]string) // names that links and renames gave an inode
	err = scanAside(t.store, cur.lastBlessed, func(r *Record, completed bool) {
		inflight := r.Run < t.run && !completed && r.Op != OpOutside
		if (r.Op == OpEntries && r.Flags&FlagDerived == 0) || r.Op == OpNames {
			entryRecs = append(entryRecs, r)
			entryInflight = append(entryInflight, inflight)
			return
		}
		if r.Flags&FlagFine != 0 {
			inflight = false // the directory intent carries it
		}
		if r.Flags&FlagDerived != 0 {
			// What another consumer's query derived is listed here too,
			// but as a path found now, not as this consumer's own
			// derivation: its old names are this consumer's to find
			// (renames.go maps only paths it has not derived itself).
			if r.Path2 != derivedBy(cur.name) {
				add(r.Path, r, inflight)
				return
			}
			recorded(r.Path, r, inflight)
			return
		}
		recorded(r.Path, r, inflight)
		recorded(r.Path2, r, inflight)
		// Every rename is expanded, not only those whose source was a
		// directory when its intent was taken: walking a name that is
		// not a directory costs one failed open.
		if r.Op == OpRename && r.Flags&FlagDerived == 0 {
			dirRenames = append(dirRenames, r)
		}
		if (r.Op == OpLink || r.Op == OpRename) && r.Ino != 0 && r.Flags&FlagDir == 0 {
			// (derived records returned above)
			linkHints[r.Ino] = append(linkHints[r.Ino], r.Path, r.Path2)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("query: scan journal: %w", err)
	}
	// Directory intents are answered only where fine records may be
	// missing: runs that ended uncleanly, and this run if queued fine
	// records were lost (the scan itself may have found that out, so
	// this is asked after it).
	lost := t.async != nil && t.async.Lost()
	for i, r := range entryRecs {
		if r.Run <= st.LastUncleanRun || (lost && r.Run == t.run) {
			dirIntents = append(dirIntents, r)
			dirInflight = append(dirInflight, entryInflight[i])
		}
	}
	// rsync with --files-from does not recurse: a renamed directory must
	// bring every path beneath its new name (and, for an exchange, beneath
	// both names), as it is in BACKING now.
	for _, r := range dirRenames {
		for _, top := range []string{r.Path, r.Path2} {
			rr := r
			if err := t.backing.Walk(top, func(p string) { add(p, rr, false) }); err != nil {
				return nil, fmt.Errorf("query: expand renamed directory %q: %w", top, err)
			}
		}
	}
	// A snapshot's chunks share its header's in-flight state.
	type dirKey struct {
		period uint64
		path   string
	}
	snapInflight := make(map[dirKey]bool)
	entInflight := make(map[snapKey]bool) // directory intents, for their entries snapshots
	for i, r := range dirIntents {
		if r.Op == OpNames && r.Path2 == "" {
			snapInflight[dirKey{r.Period, r.Path}] = dirInflight[i]
		}
		if r.Op == OpEntries && r.Path2 == "" {
			entInflight[snapKey{r.Period, r.Run, r.Path}] = dirInflight[i]
		}
	}
	for i, r := range dirIntents {
		if entriesChunk(r) {
			continue // expandNewDirs, below
		}
		rr, inflight := *r, dirInflight[i]
		rr.Op = OpEntries // reported as "entries" whichever kind it is
		if r.Op == OpNames && r.Path2 != "" {
			// A chunk has no completion of its own.
			inflight = snapInflight[dirKey{r.Period, r.Path}]
		}
		add(r.Path, &rr, inflight)
		if r.Op == OpNames {
			if r.Path2 == "" {
				continue
			}
			for _, n := range snapshotNames(r) {
				add(dirPrefix(r.Path)+n, &rr, inflight)
			}
			continue
		}
		if err := t.listDir(r.Path, func(p string) { add(p, &rr, inflight) }); err != nil {
			return nil, fmt.Errorf("query: list %q: %w", r.Path, err)
		}
	}
	if err := t.expandNewDirs(dirIntents, entInflight, func(p string, r *Record, inflight bool) { add(p, r, inflight) }); err != nil {
		return nil, fmt.Errorf("query: expand new directories: %w", err)
	}
	if err := t.addOldNames(cur.lastBlessed, paths, dirRenames, func(p string, r *Record) { add(p, r, false) }); err != nil {
		return nil, fmt.Errorf("query: old names: %w", err)
	}
	ans := &Answer{Query: P, Blessed: cur.lastBlessed, Recovered: cur.recoveredAt != 0,
		Full: cur.full, Reset: cur.reset, Entries: make([]Entry, 0, len(paths))}
	keys, aggs := sortedPaths(paths)
	paths = nil // from here on, aggs[i] is the agg of keys[i]
	// Sorted, siblings are neighbours: a batch statter opens each
	// directory once.
	stat := func(fn func(i int, typ string, ino uint64, nlink uint32)) {
		for i, p := range keys {
			typ, ino, nlink := t.backing.Lstat(p)
			fn(i, typ, ino, nlink)
		}
	}
	if bs, ok := t.backing.(BatchLstater); ok {
		stat = func(fn func(i int, typ string, ino uint64, nlink uint32)) { bs.LstatSorted(keys, fn) }
	}
	ans.Entries = ans.Entries[:len(keys)]
	// A million entries share a handful of op lists, made before the
	// stat callbacks, which may run concurrently (read-only from here).
	opLists := make(map[uint32][]string)
	for _, a := range aggs {
		if _, ok := opLists[a.ops]; !ok {
			opLists[a.ops] = opList(a.ops)
		}
	}
	stat(func(i int, typ string, ino uint64, nlink uint32) {
		a := aggs[i]
		a.nowIno, a.nowNlink = ino, nlink
		// The recorded inode is the one that was modified; the path
		// may hold another file now (renamed over it). With it, a
		// consumer can find the other names of a file with links.
		if a.ino != 0 && a.ino != ino {
			ino, nlink = a.ino, 0
		}
		shadowed := typ == ""
		if shadowed {
			typ = "gone"
		}
		ans.Entries[i] = Entry{Path: keys[i], Type: typ, Ops: opLists[a.ops],
			Period: a.period, Inflight: a.inflight, Ino: ino, Nlink: nlink, Inos: a.inos, shadowed: shadowed}
	})
	// A shadowed path kept only by its own shadow record (from an earlier
	// answer, now blessed) has been seen through one more round; it is
	// not listed any more. aggs stays parallel to the entries.
	kept := 0
	for i := range ans.Entries {
		if ans.Entries[i].shadowed && !aggs[i].real {
			continue
		}
		ans.Entries[kept], aggs[kept] = ans.Entries[i], aggs[i]
		kept++
	}
	clear(ans.Entries[kept:])
	ans.Entries, aggs = ans.Entries[:kept], aggs[:kept]
	if aggs, err = t.addLinkNames(ans, aggs, linkHints); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := t.recordDerived(P, cur.name, ans, aggs); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := t.saveState(func(s *State) { s.queried(cur, P, time.Now()) }); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return ans, nil
}

// recordDerived makes the answer's derived paths durable records of P.
// aggs[i] is the agg of ans.Entries[i].
//
// Everything an answer lists must stay listed until a bless of that
// answer: the consumer may copy it, and a crash may then undo it in
// BACKING. Paths that come from records stay (the records do). Paths
// derived from BACKING as it is now (beneath a renamed directory, the
// old names of those, the entries of a directory intent) would not: a
// power cut can undo the rename, and the directory can be created again
// before the consumer's rsync runs, which then keeps the copied subtree.
// (The crash tests found exactly that.) And a path left out of the plain
// answer because its ancestor is not a directory now (shadowed) may need
// listing once the ancestor is a directory again, after its own record
// is blessed away.
func (t *Tracker) recordDerived(P uint64, consumer string, ans *Answer, aggs []*agg) error {
	var recs []*Record
	now := time.Now()
	for i := range ans.Entries {
		e, a := &ans.Entries[i], aggs[i]
		if a.recorded && (!e.shadowed || !a.real) {
			// Recorded already; a shadowed path is recorded once
			// more (below) only while a record of a modification
			// names it, so it goes after one more bless.
			continue
		}
		op := OpEntries
		for o := Op(1); o < opMax; o++ {
			if a.ops&(1<<o) != 0 && o != OpEntries {
				op = o
				break
			}
		}
		// A derived path is needed until this query is blessed, so it
		// goes to P-1, which a bless of P discards (P-1 is drained and
		// not below LastBlessed). A shadowed path is needed after that
		// bless, so it goes to P.
		period := P - 1
		if e.shadowed {
			period = P
		}
		recs = append(recs, &Record{Period: period, Run: t.run, Op: op, Flags: FlagFine | FlagDerived,
			Ino: a.ino, Time: now, Path: e.Path, Path2: derivedBy(consumer)})
	}
	if len(recs) == 0 {
		return nil
	}
	if err := t.append(recs); err != nil {
		return fmt.Errorf("record %d derived paths: %w", len(recs), err)
	}
	return nil
}

// derivedBy is the Path2 of a derived record of consumer ("" for the
// default, as records made before named consumers have it): a NUL, which
// no path holds, and the name.
func derivedBy(consumer string) string {
	if consumer == "" {
		return ""
	}
	return "\x00" + consumer
}

// BatchLstater is an optional Backing method: Lstat of many sorted paths
// at once, for a query over a million paths. fn may be called from
// several goroutines at once, each time for a different i.
type BatchLstater interface {
	LstatSorted(paths []string, fn func(i int, typ string, ino uint64, nlink uint32))
}

// Lister is an optional Backing method: the entries directly beneath dir.
type Lister interface {
	List(dir string, fn func(path string)) error
}

func (t *Tracker) listDir(dir string, fn func(string)) error {
	if l, ok := t.backing.(Lister); ok {
		return l.List(dir, fn)
	}
	prefix := dirPrefix(dir)
	return t.backing.Walk(dir, func(p string) {
		if !strings.Contains(p[len(prefix):], "/") {
			fn(p)
		}
	})
}

func opList(mask uint32) []string {
	var ops []string
	for o := Op(1); o < opMax; o++ {
		if mask&(1<<o) != 0 {
			ops = append(ops, o.String())
		}
	}
	return ops
}

// Plain renders the rsync-complete plain answer: one path per line,
// sorted, unique; names holding a newline are left out (they are only in
// the JSON answer), and so are paths beneath an ancestor that is not a
// directory any more (see Entry.shadowed).
func (a *Answer) Plain() []byte {
	plain := func(e *Entry) bool { return !e.shadowed && strings.IndexByte(e.Path, '\n') < 0 }
	// Sized first: a million-line answer is built in one allocation.
	n := 0
	for i := range a.Entries {
		if e := &a.Entries[i]; plain(e) {
			n += len(e.Path) + 1
		}
	}
	b := make([]byte, 0, n)
	for i := range a.Entries {
		if e := &a.Entries[i]; plain(e) {
			b = append(b, e.Path...)
			b = append(b, '\n')
		}
	}
	return b
}
