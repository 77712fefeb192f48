package checkpoint

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors that the fs layer turns into errnos.
var (
	// ErrUnknownQuery: bless of an id that no query returned (EINVAL).
	ErrUnknownQuery = errors.New("no query returned this id")
	// ErrClosed: the tracker was closed (the mount is going away).
	ErrClosed = errors.New("tracker closed")
)

// Backing is what the tracker needs from the tracked tree. The fs layer
// implements it on BACKING, through directory fds.
type Backing interface {
	// Syncfs makes BACKING durable (syncfs(2)).
	Syncfs() error
	// Lstat returns the type (TypeGone if path does not exist,
	// TypeShadowed if an ancestor is not a directory), inode number and
	// link count of path, relative to BACKING.
	Lstat(path string) (typ FileType, ino uint64, nlink uint32)
	// Walk calls fn for every path strictly beneath the directory dir.
	Walk(dir string, fn func(path string)) error
}

// InodeCounter is a Backing that can say how many inodes its file system
// holds (statfs), 0 if it cannot: the measure of the tree behind the
// answers' bound (query.go, "Whole answers").
type InodeCounter interface {
	InodesUsed() uint64
}

// Intent describes one modification about to be made.
type Intent struct {
	Op    Op
	Flags uint8
	Ino   uint64
	// Parent, Parent2 and Ino2 are as in Record: a namespace change
	// names the directories it changes by inode (0 if unknown).
	Parent, Parent2, Ino2 uint64
	Path                  string
	Path2                 string
}

// Tracker is the period state machine: it turns modifications into
// durable intents, runs queries and blesses.
//
// Lock order: qmu, then handlesMu, then a dedupSet shard mu, then an
// entry mu. stateMu is a leaf. No lock is held across Store.Append except
// qmu (which serialises queries, checkpoints and blesses only), a
// roster's mu (coarse.go: removals in one directory that wait for its
// new roster, which they would otherwise each pay a sync for) and
// an entry's censusMu (newdirs.go: mkdirs in one directory waiting for its
// census). Neither of the last two is held while taking another
// lock.
type Tracker struct {
	store   Store
	backing Backing
	log     *slog.Logger
	run     uint64

	ps periods

	qmu   sync.Mutex // serialises Query, Checkpoint, Bless, Close and consumer changes
	links linkIndex  // guarded by qmu (links.go)

	maxLag, warnLag time.Duration        // Options.ConsumerMaxAge, ConsumerWarnAge
	warned          map[string]time.Time // guarded by qmu: when a lagging consumer was last logged

	stateMu sync.Mutex // guards state
	state   State

	handlesMu sync.Mutex // guards handles
	handles   map[*Handle]struct{}

	closed      atomic.Bool
	cleanClosed bool // guarded by qmu: Close succeeded

	gcMu sync.Mutex // serialises DropBefore calls (background garbage collection)
	gcWG sync.WaitGroup

	// async is the store's unsynced append, if it has one: it enables
	// coarse mode (coarse.go).
	async       AsyncStore
	comp        *completer
	keepBlessed bool
	slowQuery   time.Duration // Options.SlowQuery

	tune tuning // set by New; the model's tests change it before the first Begin

	// settlePaths, if set, is called by a query before it takes the
	// paths of the files open for writing (SetPathSettler).
	settlePaths atomic.Pointer[func()]

	onQuery func(d time.Duration, paths int, err error) // Options.OnQuery
	onBless func(d time.Duration, err error)            // Options.OnBless
	// Records appended (stats.go): synced through Store.Append, and
	// queued unsynced through AsyncStore.AppendAsync.
	syncedRecs, queuedRecs atomic.Uint64
	// oldNameFallbacks counts the queries whose old names took the
	// path rule, not the inode rule (oldnames.go).
	oldNameFallbacks atomic.Uint64
	// oldNamesCapped counts the queries whose listing beneath names that
	// are not directories now passed its budget (oldnames.go).
	oldNamesCapped atomic.Uint64
	// wholeAnswers counts the answers that said full because their
	// paths would have passed the bound (query.go, "Whole answers").
	wholeAnswers atomic.Uint64
	// answerSizes: the paths of each consumer's last answer, its next
	// query's first guess of its size (query_stages.go). Guarded by qmu.
	answerSizes map[string]int
}

// Options tune a Tracker.
type Options struct {
	// FineOnly disables coarse mode: every intent is synced on its own.
	FineOnly bool
	// CompleteDelay is how long an idle intent waits before its
	// completion is recorded (default 10ms).
	CompleteDelay time.Duration
	// KeepBlessed keeps the records of blessed periods in the journal
	// (queries still ignore them), so that `hsmfs journal dump` shows the
	// whole history. For debugging crash tests.
	KeepBlessed bool
	// SlowQuery makes every query take at least this long after its
	// scan (the time a query over millions of paths takes), for tests of
	// an abandoned query; it ends early once the query is abandoned.
	SlowQuery time.Duration
	// ConsumerMaxAge resets a named consumer that has not blessed for
	// longer (0: never): its backlog is dropped and its next answer says
	// reset and full (consumers.go).
	ConsumerMaxAge time.Duration
	// ConsumerWarnAge marks a consumer lagging in lists, and logs it at
	// queries, once it has not blessed for longer (0: never).
	ConsumerWarnAge time.Duration
	// OnQuery and OnBless, if set, are called after each query and bless
	// with its duration (lock wait included: what the consumer waited),
	// the number of paths answered (0 on error) and its error. They run
	// on the caller's goroutine and must not call the Tracker. For
	// metrics.
	OnQuery func(d time.Duration, paths int, err error)
	OnBless func(d time.Duration, err error)
}

// New loads the durable state, performs recovery after an unclean end,
// and marks the journal as in use (not clean) durably.
func New(store Store, backing Backing, log *slog.Logger) (*Tracker, error) {
	return NewWithOptions(store, backing, log, Options{})
}

// NewWithOptions is New with tuning.
func NewWithOptions(store Store, backing Backing, log *slog.Logger, opt Options) (*Tracker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.LoadState()
	if err != nil {
		return nil, fmt.Errorf("load journal state: %w", err)
	}
	t := &Tracker{store: store, backing: backing, log: log, handles: make(map[*Handle]struct{})}
	if st.Current == 0 {
		st.Current = 1
		st.NotQueries = append(st.NotQueries, 1)
	}
	if st.Run > 0 && !st.Clean {
		st.LastUncleanRun = st.Run
		// The last mount did not end cleanly. Its records stay; intents
		// of its run without completions are reported in flight. A new
		// period separates what happened before the crash from what
		// happens after it.
		st.Current++
		st.RecoveredAt = st.Current
		st.recovered(st.Current)
		st.NotQueries = append(st.NotQueries, st.Current)
		log.Warn("journal was not closed cleanly: recovering", "new_period", st.Current)
	}
	st.Run++
	st.Clean = false
	if err := store.SaveState(st); err != nil {
		return nil, fmt.Errorf("save journal state: %w", err)
	}
	t.run = st.Run
	t.state = st
	if as, ok := store.(AsyncStore); ok && !opt.FineOnly {
		t.async = as
	}
	t.comp = newCompleter(t, opt.CompleteDelay)
	t.keepBlessed = opt.KeepBlessed
	t.slowQuery = opt.SlowQuery
	t.maxLag, t.warnLag = opt.ConsumerMaxAge, opt.ConsumerWarnAge
	t.onQuery, t.onBless = opt.OnQuery, opt.OnBless
	t.tune.reRosterAfter = reRosterMisses
	t.ps.sets[st.Current&1].Store(newDedupSet(st.Current))
	t.ps.cur.Store(st.Current)
	if k := st.keepFrom(); k > 0 {
		t.collect(k) // finish a bless that a crash interrupted
	}
	return t, nil
}

// tuning is what the model's tests (model_test.go) change in a Tracker
// to reach more schedules, or to check that they catch a deliberate bug.
// The product keeps New's values.
type tuning struct {
	// reRosterAfter is reRosterMisses; the model makes it smaller.
	reRosterAfter int
	// mutAllOnRoster is a deliberate bug for the model's test of
	// itself (TestModelCatchesRemovalOffRoster): every removal in
	// a directory with a roster counts as covered.
	mutAllOnRoster bool
}

// Token is a modification in progress. End it once the operation on
// BACKING has returned, whatever its result.
type Token struct {
	t  *Tracker
	p  uint64
	es []*sharedIntent
}

// Begin records the intent durably (or finds it already durable in this
// period) and returns only then. The caller may modify BACKING only if
// err is nil, and must call End afterwards.
// Several intents of one operation (a setattr that changes mode and
// times) share one sync.
func (t *Tracker) Begin(ins ...Intent) (Token, error) {
	if t.closed.Load() {
		return Token{}, ErrClosed
	}
	p := t.ps.enter()
	es, err := t.acquire(p, ins...)
	if err != nil {
		t.ps.exit(p)
		return Token{}, err
	}
	return Token{t: t, p: p, es: es}, nil
}

// End records the completion of the modification.
func (tok Token) End() {
	if tok.t == nil {
		return
	}
	for _, e := range tok.es {
		tok.t.release(e)
	}
	tok.t.ps.exit(tok.p)
}

// join takes a reference on an intent that is already durable.
func (t *Tracker) join(e *sharedIntent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refs++
	if e.refs == 1 && e.completed {
		// A new modification joins an intent whose completion is
		// already recorded: take the completion back so that a crash
		// now reports it in flight.
		if err := t.store.Reopen(e.rec.Period, e.rec.Seq); err != nil {
			e.refs--
			return err
		}
		e.completed = false
	}
	return nil
}

// release drops a reference. The completion of an idle intent is
// recorded a little later by the completer (completer.go), so that a
// burst of modifications of one path does not write and take back a
// completion for each of them.
func (t *Tracker) release(e *sharedIntent) {
	e.mu.Lock()
	e.refs--
	t.idleLocked(e)
}

// idle hands an entry that no one holds to the completer.
func (t *Tracker) idle(e *sharedIntent) {
	e.mu.Lock()
	t.idleLocked(e)
}

// idleLocked is release and idle after the reference count: it unlocks
// e.mu.
func (t *Tracker) idleLocked(e *sharedIntent) {
	if e.refs == 0 {
		e.idleSince = time.Now()
	}
	idle := e.refs == 0 && !e.completed && !e.queued
	if idle {
		e.queued = true
	}
	e.mu.Unlock()
	if idle {
		t.comp.add(e)
	}
}

// Current returns the current period.
func (t *Tracker) Current() uint64 { return t.ps.cur.Load() }

// stateNow is a copy of the durable state as last saved (not to be
// confused with a roster, roster.go, or a directory's entries
// list, newdirs.go).
func (t *Tracker) stateNow() State {
	t.stateMu.Lock()
	defer t.stateMu.Unlock()
	return t.state
}

func (t *Tracker) saveState(mut func(*State)) error {
	t.stateMu.Lock()
	st := t.state.Clone()
	t.stateMu.Unlock()
	mut(&st)
	if err := t.store.SaveState(st); err != nil {
		return fmt.Errorf("save journal state: %w", err)
	}
	t.stateMu.Lock()
	t.state = st
	t.stateMu.Unlock()
	return nil
}

// advance starts period P = current+1, drains earlier periods and
// re-records every file open for writing in P. Caller holds qmu.
func (t *Tracker) advance() (uint64, error) {
	P := t.ps.cur.Load() + 1
	// The state must say Current >= P before any record of P exists,
	// so that recovery always starts a period above every record.
	// P is not blessable until the query that starts it has returned
	// its answer (Query removes it then); a checkpoint's never is.
	if err := t.saveState(func(s *State) {
		s.Current = P
		s.NotQueries = append(slices.Clone(s.NotQueries), P)
	}); err != nil {
		return 0, err
	}
	t.ps.switchTo(P)
	if err := t.rerecordHandles(P); err != nil {
		return 0, err
	}
	return P, nil
}

// Checkpoint starts a new period and waits for the earlier ones to
// drain. It is not a query: it cannot be blessed.
func (t *Tracker) Checkpoint() (uint64, error) {
	if t.closed.Load() {
		return 0, ErrClosed
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return t.advance()
}

// Run is the number of this mount of the journal (1 for the first).
func (t *Tracker) Run() uint64 { return t.run }

// RecordOutside durably records, in the current period, paths that
// changed around the tracker (found by the check at mount, before any
// modification through the mount). They are answered like any record,
// never in flight (they have no completion: the change was over before
// the record was made).
func (t *Tracker) RecordOutside(paths []string) error {
	if t.closed.Load() {
		return ErrClosed
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	P, now := t.ps.cur.Load(), time.Now()
	const batch = 10_000
	for len(paths) > 0 {
		n := min(batch, len(paths))
		recs := make([]*Record, n)
		for i, p := range paths[:n] {
			recs[i] = &Record{Period: P, Run: t.run, Op: OpOutside, Time: now, Path: p}
		}
		if err := t.store.Append(recs); err != nil {
			return fmt.Errorf("record %d outside changes: %w", len(paths), err)
		}
		paths = paths[n:]
	}
	return nil
}

// Bless discards the records of every period before id, after making
// BACKING durable. id 0 means the latest query. When Bless returns nil
// the bless is durable.
func (t *Tracker) Bless(id uint64) (uint64, error) { return t.BlessWith(Blessing{ID: id}) }

// BlessFor is Bless for the named consumer (DefaultConsumer or "" for
// the default). Records are discarded below the lowest cursor of all.
func (t *Tracker) BlessFor(name string, id uint64) (uint64, error) {
	return t.BlessWith(Blessing{Consumer: name, ID: id})
}

// Blessing is one bless: whose, which query, and what the consumer says
// of its copy.
type Blessing struct {
	Consumer string // "" or DefaultConsumer for the default
	ID       uint64 // 0: the latest query
	// Full: the consumer copied the whole tree. A consumer whose answers
	// say full can bless only so (ErrFullCopy).
	Full bool
	// By names who blessed; the consumer's next answers and its status
	// say it, so that a program keeping a copy notices a bless that it
	// did not make.
	By string
}

// BlessWith blesses as b says; it returns the query blessed.
func (t *Tracker) BlessWith(b Blessing) (uint64, error) {
	if t.onBless == nil {
		return t.bless(b)
	}
	start := time.Now()
	done, err := t.bless(b)
	t.onBless(time.Since(start), err)
	return done, err
}

func (t *Tracker) bless(b Blessing) (uint64, error) {
	if t.closed.Load() {
		return 0, ErrClosed
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	st := t.stateNow()
	cur, err := st.cursor(b.Consumer)
	if err != nil {
		return 0, fmt.Errorf("bless: %w", err)
	}
	id := b.ID
	if id == 0 {
		id = cur.lastQuery
		if id == 0 {
			return 0, fmt.Errorf("bless: no query has been run: %w", ErrUnknownQuery)
		}
	}
	if id > cur.lastQuery {
		return 0, fmt.Errorf("bless %d: latest query is %d: %w", id, cur.lastQuery, ErrUnknownQuery)
	}
	if id <= cur.lastBlessed {
		return id, nil // a retry: already done
	}
	if err := st.checkBless(cur, id, b.Full); err != nil {
		return 0, err
	}
	// What the consumer copied must survive a crash before the records
	// that describe it are gone.
	if err := t.backing.Syncfs(); err != nil {
		return 0, fmt.Errorf("bless %d: syncfs backing: %w", id, err)
	}
	// The copy ended before this bless began: a modification whose
	// record comes after seq began after the copy (oldnames.go).
	seq, err := t.store.LastSeq()
	if err != nil {
		return 0, fmt.Errorf("bless %d: %w", id, err)
	}
	var keep uint64
	if err := t.saveState(func(s *State) {
		s.blessed(cur, id, b.By, time.Now(), seq)
		keep = s.keepFrom()
	}); err != nil {
		return 0, fmt.Errorf("bless %d: %w", id, err)
	}
	t.collect(keep)
	return id, nil
}

// collect deletes records below period in the background. Queries never
// read below LastBlessed, so deletion is only garbage collection; after a
// crash New starts it again.
func (t *Tracker) collect(period uint64) {
	if t.keepBlessed {
		return
	}
	t.gcWG.Add(1)
	go func() {
		defer t.gcWG.Done()
		t.gcMu.Lock()
		defer t.gcMu.Unlock()
		if err := t.store.DropBefore(period); err != nil {
			t.log.Warn("journal: discarding blessed records failed; will retry at next bless or mount", "before", period, "err", err)
		}
	}()
}

// Close marks the journal clean. Call it only when no modification can
// start any more (after the FUSE server has stopped). If modifications or
// open files remain it fails, and may be called again once they are gone.
func (t *Tracker) Close() error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	t.closed.Store(true) // no new modification, query or bless
	if t.cleanClosed {
		return nil
	}
	t.gcWG.Wait()
	t.comp.stop()
	if n := t.ps.inFlight(); n != 0 {
		return fmt.Errorf("close: %d modifications still in flight; journal left marked unclean", n)
	}
	t.handlesMu.Lock()
	open := len(t.handles)
	t.handlesMu.Unlock()
	if open != 0 {
		return fmt.Errorf("close: %d files still open for writing; journal left marked unclean", open)
	}
	lost := t.async != nil && t.async.Lost()
	err := t.saveState(func(s *State) {
		s.Clean = true
		if lost {
			// Fine records of this run were lost: the next runs must
			// answer its directory intents whole, as after a crash.
			s.LastUncleanRun = t.run
		}
	})
	if err == nil {
		t.cleanClosed = true
	}
	return err
}
