package checkpoint

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Entry is one path of a query's answer. (The small fields come last:
// ten million entries take 104 bytes each so, 120 with them between.)
type Entry struct {
	Path   string
	Type   string // file, dir, symlink, other or gone (at query time)
	Ops    []string
	Period uint64 // the first unblessed period that recorded it
	Ino    uint64
	// Inos are the inodes that the records of this path modified (hard
	// links: a consumer looks for their other names), oldest first.
	Inos     []uint64
	Nlink    uint32
	Inflight bool // begun in an earlier run, completion never recorded
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
	BlessedBy string // who made that bless ("" if it named no one)
	Recovered bool
	// Full: the consumer must copy the whole tree once (a new consumer,
	// or one reset by the lag policy), then bless this answer.
	Full bool
	// FullWhy, when set, says why this answer is full and holds no
	// path: its paths would have passed the bound (whole.go).
	FullWhy string
	// Reset: the lag policy dropped this consumer's backlog.
	Reset   bool
	Entries []Entry // sorted bytewise by Path, unique
	// pathsOnly: a QueryOptions.PathsOnly answer (no Type, Ino, Nlink).
	pathsOnly bool
}

// agg is what one query gathers for one path. Ten million of them live
// through a query of ten million paths: the fields are ordered so that
// it packs into 64 bytes (80 with the bools among the words).
type agg struct {
	ops    uint32 // bit per Op
	period uint64
	ino    uint64
	inos   []uint64 // every inode the records name, oldest first
	// What the path holds when the query runs (its lstat).
	nowIno   uint64
	nowNlink uint32
	inflight bool
	recorded bool // a record names it
	real     bool // a record of a modification names it (not a derivation)
	derived  bool // this query derived it from BACKING now (queryRun.found)
}

// Query runs one query as the contract describes: it starts period P,
// waits for the earlier periods to drain (files open for writing are
// re-recorded in P instead), and answers every path that a record of an
// unblessed period may have changed.
func (t *Tracker) Query() (*Answer, error) { return t.QueryWith(QueryOptions{}) }

// QueryFor is Query for the named consumer (DefaultConsumer or "" for
// the default): its answer starts at its own last bless.
func (t *Tracker) QueryFor(name string) (*Answer, error) {
	return t.QueryWith(QueryOptions{Consumer: name})
}

// QueryOptions choose what a query answers.
type QueryOptions struct {
	Consumer string // "" or DefaultConsumer for the default
	// PathsOnly: the answer will be rendered as FormatPlain, which shows
	// paths and nothing else. The query then stats only the paths whose
	// other names it must find (a modified file with links), and of the
	// rest only their parent directories (whether an ancestor is not a
	// directory any more, which leaves the path out): a million new
	// files cost a thousand directory opens, not a million stats. Its
	// entries' Type, Ino and Nlink are not filled in, and Render refuses
	// FormatJSON.
	PathsOnly bool
	// Abandoned, if set, is asked between the query's stages and now and
	// then within them; once it says true, the query stops and fails
	// with ErrAbandoned (its reader is gone: nobody would read the
	// answer). Nothing is lost: the period it started stays one that no
	// query returned, which cannot be blessed, and whatever it recorded
	// is listed again by the next query. It is asked from one goroutine
	// at a time.
	Abandoned func() bool
}

// ErrAbandoned: QueryOptions.Abandoned said that the query's reader is
// gone, and the query stopped.
var ErrAbandoned = errors.New("query abandoned: its reader is gone")

// QueryWith is Query with options.
func (t *Tracker) QueryWith(o QueryOptions) (*Answer, error) {
	if t.onQuery == nil {
		return t.query(o)
	}
	start := time.Now()
	ans, err := t.query(o)
	n := 0
	if ans != nil {
		n = len(ans.Entries)
	}
	t.onQuery(time.Since(start), n, err)
	return ans, err
}

func (t *Tracker) query(o QueryOptions) (*Answer, error) {
	name := o.Consumer
	if t.closed.Load() {
		return nil, ErrClosed
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if err := t.resetLaggards(time.Now()); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	t.warnLaggards(time.Now())
	before := t.stateNow()
	if _, err := before.cursor(name); err != nil {
		return nil, fmt.Errorf("query: %w", err) // before a period is started for nothing
	}
	P, err := t.advance()
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	// The stages, each in query_stages.go: what the records name, what
	// BACKING says beneath renamed directories and for the directory
	// intents of unclean runs, the old names, one stat per path, the
	// other names of files with links, and the derived paths made
	// durable.
	q := t.newQueryRun(name, P)
	q.pathsOnly = o.PathsOnly
	if o.Abandoned != nil {
		q.abandoned = o.Abandoned
	}
	sw := newStopwatch()
	abandon := func(stage string) (*Answer, error) {
		if q.overflow {
			return t.wholeAnswer(q, name, stage)
		}
		t.log.Info("query abandoned: its reader is gone", "query", P, "stage", stage, "after", sw.sinceStart().Round(time.Millisecond))
		return nil, ErrAbandoned
	}
	if err := t.scanRecords(q); err != nil {
		if errors.Is(err, ErrAbandoned) {
			return abandon("scan")
		}
		return nil, fmt.Errorf("query: scan journal: %w", err)
	}
	sw.lap("scan")
	q.limitPaths(t.backing)
	if t.slowQuery > 0 {
		q.pause(t.slowQuery)
	}
	if q.abandoned() {
		return abandon("scan")
	}
	if err := t.expandRenames(q); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := t.answerDirIntents(q); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	sw.lap("expand")
	if q.abandoned() {
		return abandon("expand")
	}
	if err := t.addOldNames(q); err != nil {
		if errors.Is(err, ErrAbandoned) {
			return abandon("old names")
		}
		return nil, fmt.Errorf("query: old names: %w", err)
	}
	sw.lap("old names")
	if q.abandoned() {
		return abandon("old names")
	}
	keys, aggs := q.sortPaths()
	sw.lap("sort")
	ans, aggs := t.statPaths(q, keys, aggs)
	sw.lap("stat")
	if q.abandoned() {
		return abandon("stat")
	}
	ans, aggs = dropSeenShadows(ans, aggs)
	if aggs, err = t.addLinkNames(ans, aggs, q.linkHints); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	sw.lap("links")
	if q.limit > 0 && len(ans.Entries) > q.limit {
		q.overflow = true
	}
	if q.abandoned() {
		return abandon("links")
	}
	if err := t.recordDerived(P, q.cur.name, ans, aggs, q.carry, q.abandoned); err != nil {
		if errors.Is(err, ErrAbandoned) {
			return abandon("record")
		}
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := t.saveState(func(s *State) { s.queried(q.cur, P, time.Now()) }); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	sw.lap("record")
	if t.answerSizes == nil {
		t.answerSizes = make(map[string]int)
	}
	t.answerSizes[name] = len(ans.Entries)
	if sw.total() >= slowQuery {
		t.log.Info("slow query: where its time went", append([]any{"query", P, "paths", len(ans.Entries)}, sw.attrs()...)...)
	}
	return ans, nil
}

// slowQuery: a query that takes longer logs the time of each stage.
const slowQuery = time.Second

// stopwatch times the stages of a query.
type stopwatch struct {
	start, last time.Time
	laps        []any // name, duration pairs, for slog
}

func newStopwatch() *stopwatch {
	now := time.Now()
	return &stopwatch{start: now, last: now}
}

func (s *stopwatch) lap(name string) {
	now := time.Now()
	s.laps = append(s.laps, name, now.Sub(s.last).Round(time.Millisecond))
	s.last = now
}

func (s *stopwatch) total() time.Duration { return s.last.Sub(s.start) }

func (s *stopwatch) sinceStart() time.Duration { return time.Since(s.start) }

func (s *stopwatch) attrs() []any {
	return append(s.laps, "total", s.total().Round(time.Millisecond))
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
//
// The renamed directories that the old names carry forward (renames.go)
// go to P, for the next query of this consumer.
//
// They are appended in chunks, and stop is asked between them: records of
// a query that is then abandoned are extra paths for the next one, which
// derives and carries everything again (its window still holds the
// records they came from).
func (t *Tracker) recordDerived(P uint64, consumer string, ans *Answer, aggs []*agg, carry []carried, stop func() bool) error {
	var recs []*Record
	now := time.Now()
	for _, c := range carry {
		recs = append(recs, &Record{Period: P, Run: t.run, Op: OpRename, Flags: FlagDir | FlagDerived | FlagCarried,
			Ino: c.ino, Time: now, Path: c.from, Path2: c.to, Consumer: consumer})
	}
	for i := range ans.Entries {
		e, a := &ans.Entries[i], aggs[i]
		if a.recorded && (!e.shadowed || !(a.real || a.derived)) {
			// Recorded already; a shadowed path is recorded once
			// more (below) only while a record of a modification, or
			// an unblessed record that this query derived it from,
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
			Ino: a.ino, Time: now, Path: e.Path, Consumer: consumer})
	}
	const chunk = 1 << 16
	for len(recs) > 0 {
		n := min(len(recs), chunk)
		if err := t.append(recs[:n]); err != nil {
			return fmt.Errorf("record %d derived paths: %w", len(recs), err)
		}
		if recs = recs[n:]; len(recs) > 0 && stop() {
			return ErrAbandoned
		}
	}
	return nil
}

// BatchLstater is an optional Backing method: Lstat of many sorted paths
// at once, for a query over a million paths. fn may be called from
// several goroutines at once, each time for a different i. A path for
// which need(i) is false is not stat'ed itself, only its parent
// directory: typ is then what Lstat would say if that makes the path
// shadowed or gone, and TypeUnstated otherwise.
type BatchLstater interface {
	LstatSorted(paths []string, need func(i int) bool, fn func(i int, typ FileType, ino uint64, nlink uint32))
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
