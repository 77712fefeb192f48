package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// This file and membacking_test.go hold the test doubles of the
// tracker's two dependencies:
//
//   - memStore, an in-memory Store that models durability exactly as the
//     Store interface documents it (the Store contract, which
//     checkpoint/checkpointtest holds, runs against it and against the
//     real journal): Append and SaveState are durable when
//     they return, and so is Reopen; Complete is volatile (a simulated
//     process kill keeps it, a simulated power cut loses it); DropBefore
//     deletes. crash(powerCut) returns the store that a new mount would
//     open. It injects errors and counts syncs.
//   - memBacking, an in-memory BACKING: a map path -> {type, inode,
//     content version}, with Walk, Lstat and Syncfs, and its own model of
//     what survives a power cut (only what the last Syncfs made durable,
//     plus any subset of the later operations).
//
// Both write into an optional shared eventLog so that tests can assert
// the order of their calls (syncfs before the bless is saved, ...).

// errDeadStore is what a store answers once it has been crashed: the
// goroutines of the dead tracker that still run must not touch the store
// that the next mount opens.
var errDeadStore = errors.New("memstore: store crashed (this tracker is dead)")

// eventLog records the calls of the fakes, in order.
type eventLog struct {
	mu sync.Mutex
	ev []string
}

func (l *eventLog) add(format string, a ...any) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.ev = append(l.ev, fmt.Sprintf(format, a...))
	l.mu.Unlock()
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

// index returns the position of the first event with that prefix at or
// after from, or -1.
func (l *eventLog) index(prefix string, from int) int {
	ev := l.all()
	for i := from; i < len(ev); i++ {
		if strings.HasPrefix(ev[i], prefix) {
			return i
		}
	}
	return -1
}

type memKey struct{ period, seq uint64 }

func (k memKey) less(o memKey) bool {
	if k.period != o.period {
		return k.period < o.period
	}
	return k.seq < o.seq
}

// volOp is one volatile operation: a Complete (done=true) or a Reopen.
type volOp struct {
	k    memKey
	done bool
}

// memStoreOpts are the knobs of a memStore; they survive crash().
type memStoreOpts struct {
	// flushOnSync: every sync (Append, SaveState) also makes the volatile
	// operations made before it durable, as a log-structured store such
	// as badger does. The interface does not promise it; without it a
	// power cut loses every Complete and Reopen ever made.
	flushOnSync bool
	// lieAppend is a MUTATION for testing the tests: Append returns
	// before its records are durable (they become durable only at the
	// next SaveState), so a power cut can lose records whose
	// modification reached BACKING.
	lieAppend bool
	// async makes store() an AsyncStore, which turns on the tracker's
	// coarse mode.
	async bool
}

type memStore struct {
	opts   memStoreOpts
	events *eventLog

	mu   sync.Mutex
	dead bool

	// Durable part: survives any crash.
	recs        map[memKey]Record
	state       State
	durableDone map[memKey]bool // completion marks made durable by a flush

	// Volatile part: survives a kill, not a power cut.
	done     map[memKey]bool // completion marks as they are now
	volRecs  map[memKey]Record
	volLog   []volOp // volatile operations not yet flushed
	nextSeq  uint64
	syncs    uint64
	appends  int // Append calls that returned nil
	failedAp int // Append calls that failed

	// AsyncStore: records queued by AppendAsync (lost by any crash) until
	// a Scan or writeAsync writes them (unsynced: volRecs) or an Append
	// or SaveState writes and syncs them.
	asyncQ     []*Record // the caller's records: Seq is set when written, as the journal's committer does
	lost       bool
	asyncErrs  []error // the next unsynced writes of the queue fail
	asyncCount int

	// Fault injection: the next calls fail with these errors, in order.
	appendErrs []error
	saveErrs   []error
	completeEr []error

	// appendHook, if set, runs at the start of every Append, without the
	// lock: tests use it to hold an Append. asyncHook does the same for
	// AppendAsync.
	appendHook func(recs []*Record)
	asyncHook  func(recs []*Record)
	// saveHook, if set, runs in every SaveState (under the lock); an
	// error fails that SaveState.
	saveHook func() error

	// violations of the rules that the tracker must follow when it uses
	// the store (checked by tests at the end).
	violations []string
}

func newMemStore(opts memStoreOpts, events *eventLog) *memStore {
	return &memStore{
		opts: opts, events: events,
		recs: make(map[memKey]Record), durableDone: make(map[memKey]bool),
		done: make(map[memKey]bool), volRecs: make(map[memKey]Record),
		nextSeq: 1,
	}
}

var _ Store = (*memStore)(nil)

// crash simulates the end of the process (powerCut=false: every write
// that returned, synced or not, survives) or of the machine (powerCut:
// only what was synced survives). The old store is dead afterwards: every
// later call on it fails. The returned store is what the next mount opens.
func (m *memStore) crash(powerCut bool) *memStore {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead = true
	n := newMemStore(m.opts, m.events)
	n.nextSeq = m.nextSeq
	n.state = m.state
	for k, r := range m.recs {
		n.recs[k] = r
	}
	if !powerCut {
		for k, r := range m.volRecs {
			n.volRecs[k] = r
		}
		for k := range m.done {
			n.done[k] = true
		}
		n.volLog = slices.Clone(m.volLog)
	} else {
		for k := range m.durableDone {
			n.done[k] = true
		}
	}
	for k := range m.durableDone {
		n.durableDone[k] = true
	}
	m.events.add("crash power=%v (async queue of %d lost)", powerCut, len(m.asyncQ))
	return n
}

// store returns the Store to hand to the tracker: m itself, or, with
// opts.async, a wrapper that also implements AsyncStore.
func (m *memStore) store() Store {
	if m.opts.async {
		return memAsyncStore{m}
	}
	return m
}

// memAsyncStore adds AsyncStore to a memStore (a separate type, because
// the tracker turns coarse mode on by a type assertion).
type memAsyncStore struct{ *memStore }

var _ AsyncStore = memAsyncStore{}

// AppendAsync queues copies of the records: neither durable nor visible.
func (m memAsyncStore) AppendAsync(recs []*Record) {
	if h := m.asyncHook; h != nil {
		h(recs)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return
	}
	for _, r := range recs {
		if r.Flags&FlagFine == 0 {
			m.violate("AppendAsync of a record without FlagFine: %+v", *r)
		}
		if !r.Op.Valid() || r.Path == "" {
			m.violate("AppendAsync of an invalid record: %+v", *r)
		}
		m.asyncQ = append(m.asyncQ, r)
	}
	m.asyncCount += len(recs)
	m.events.add("appendasync %d", len(recs))
}

func (m memAsyncStore) Lost() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

// writeAsync is the journal's committer writing the queue on its own,
// without a sync (it may happen at any time).
func (m *memStore) writeAsync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dead {
		m.writeAsyncLocked()
	}
}

func (m *memStore) failNextAsyncWrite(err error) {
	m.mu.Lock()
	m.asyncErrs = append(m.asyncErrs, err)
	m.mu.Unlock()
}

func (m *memStore) queued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.asyncQ)
}

// writeAsyncLocked writes the queue unsynced: visible, kept by a kill,
// lost by a power cut.
func (m *memStore) writeAsyncLocked() {
	if len(m.asyncQ) == 0 {
		return
	}
	if len(m.asyncErrs) > 0 {
		err := m.asyncErrs[0]
		m.asyncErrs = m.asyncErrs[1:]
		m.events.add("asyncwrite-failed %v", err)
		m.loseAsyncLocked()
		return
	}
	for _, r := range m.asyncQ {
		r.Seq = m.nextSeq
		m.nextSeq++
		m.volRecs[memKey{r.Period, r.Seq}] = *r
	}
	m.events.add("asyncwrite %d", len(m.asyncQ))
	m.asyncQ = nil
}

// syncAsyncLocked writes the queue as part of a synced batch.
func (m *memStore) syncAsyncLocked() {
	for _, r := range m.asyncQ {
		r.Seq = m.nextSeq
		m.nextSeq++
		m.recs[memKey{r.Period, r.Seq}] = *r
	}
	m.asyncQ = nil
}

func (m *memStore) loseAsyncLocked() {
	if len(m.asyncQ) > 0 {
		m.lost = true
		m.asyncQ = nil
	}
}

func (m *memStore) failNextAppend(err error) {
	m.mu.Lock()
	m.appendErrs = append(m.appendErrs, err)
	m.mu.Unlock()
}

func (m *memStore) failNextSaveState(err error) {
	m.mu.Lock()
	m.saveErrs = append(m.saveErrs, err)
	m.mu.Unlock()
}

func (m *memStore) failNextComplete(err error) {
	m.mu.Lock()
	m.completeEr = append(m.completeEr, err)
	m.mu.Unlock()
}

// pendingFaults reports how many injected faults have not fired yet.
func (m *memStore) pendingFaults() (appends, saves int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.appendErrs), len(m.saveErrs)
}

func (m *memStore) counts() (appends, failedAppends int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.appends, m.failedAp
}

func (m *memStore) violate(format string, a ...any) {
	m.violations = append(m.violations, fmt.Sprintf(format, a...))
}

func (m *memStore) problems() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.violations)
}

// flushLocked makes the volatile operations durable (flushOnSync only).
func (m *memStore) flushLocked() {
	if m.opts.flushOnSync {
		for _, op := range m.volLog {
			if op.done {
				m.durableDone[op.k] = true
			} else {
				delete(m.durableDone, op.k)
			}
		}
		m.volLog = m.volLog[:0]
		if !m.opts.lieAppend {
			for k, r := range m.volRecs {
				m.recs[k] = r
			}
			clear(m.volRecs)
		}
	}
}

func (m *memStore) Append(recs []*Record) error {
	if h := m.appendHook; h != nil {
		h(recs)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDeadStore
	}
	if len(m.appendErrs) > 0 {
		err := m.appendErrs[0]
		m.appendErrs = m.appendErrs[1:]
		m.failedAp++
		m.loseAsyncLocked()
		m.events.add("append-failed %v", err)
		return fmt.Errorf("memstore: append: %w", err)
	}
	m.syncAsyncLocked()
	for _, r := range recs {
		if !r.Op.Valid() {
			m.violate("append of a record with invalid op %d (%q)", r.Op, r.Path)
		}
		if r.Path == "" && r.Op != OpEntries && r.Op != OpRoster {
			m.violate("append of a record with an empty path (op %s)", r.Op)
		}
		// The tracker promises that the durable state says Current >= P
		// before any record of P exists (recovery relies on it).
		if r.Period > m.state.Current {
			m.violate("record of period %d appended while the durable state says Current=%d", r.Period, m.state.Current)
		}
		if r.Period < m.state.LastBlessed {
			m.violate("record of period %d appended below LastBlessed=%d", r.Period, m.state.LastBlessed)
		}
	}
	paths := make([]string, 0, len(recs))
	for _, r := range recs {
		r.Seq = m.nextSeq
		m.nextSeq++
		k := memKey{r.Period, r.Seq}
		if m.opts.lieAppend {
			m.volRecs[k] = *r
		} else {
			m.recs[k] = *r
		}
		paths = append(paths, fmt.Sprintf("%d:%s:%s", r.Period, r.Op, r.Path))
	}
	m.syncs++
	m.appends++
	m.flushLocked()
	m.events.add("append %s", strings.Join(paths, ","))
	return nil
}

func (m *memStore) Complete(period, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDeadStore
	}
	if len(m.completeEr) > 0 {
		err := m.completeEr[0]
		m.completeEr = m.completeEr[1:]
		return fmt.Errorf("memstore: complete: %w", err)
	}
	k := memKey{period, seq}
	m.done[k] = true
	m.volLog = append(m.volLog, volOp{k, true})
	m.events.add("complete %d/%d", period, seq)
	return nil
}

// Reopen is durable when it returns (the Store interface says so since
// the tracker relies on it: a modification that joins a completed intent
// must be reported in flight after any crash). Like any sync of the
// journal, it also writes the queued fine records.
func (m *memStore) Reopen(period, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDeadStore
	}
	k := memKey{period, seq}
	delete(m.done, k)
	m.volLog = append(m.volLog, volOp{k, false})
	m.syncAsyncLocked()
	m.flushLocked()
	delete(m.durableDone, k)
	m.syncs++
	m.events.add("reopen %d/%d", period, seq)
	return nil
}

func (m *memStore) LoadState() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return State{}, errDeadStore
	}
	return cloneState(m.state), nil
}

// cloneState deep-copies a State, as a store that serializes it does (no
// slice of the tracker's State is shared with the store's, not even a
// consumer's; the Store contract, checkpointtest, checks it).
func cloneState(st State) State { return st.Clone() }

func (m *memStore) SaveState(st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDeadStore
	}
	if m.saveHook != nil {
		if err := m.saveHook(); err != nil {
			m.saveErrs = append([]error{err}, m.saveErrs...)
		}
	}
	if len(m.saveErrs) > 0 {
		err := m.saveErrs[0]
		m.saveErrs = m.saveErrs[1:]
		m.loseAsyncLocked()
		m.events.add("savestate-failed %v", err)
		return fmt.Errorf("memstore: save state: %w", err)
	}
	m.syncAsyncLocked()
	st = cloneState(st)
	old := m.state
	if st.Current < old.Current || st.LastBlessed < old.LastBlessed || st.LastQuery < old.LastQuery || st.Run < old.Run {
		m.violate("state went backwards: %+v -> %+v", old, st)
	}
	if st.LastBlessed > st.LastQuery || st.LastQuery > st.Current {
		m.violate("inconsistent state %+v", st)
	}
	m.state = st
	m.syncs++
	if m.opts.lieAppend {
		// The lying store writes its records back lazily, here.
		for k, r := range m.volRecs {
			m.recs[k] = r
		}
		clear(m.volRecs)
	}
	m.flushLocked()
	m.events.add("savestate current=%d query=%d blessed=%d run=%d clean=%v recovered=%d",
		st.Current, st.LastQuery, st.LastBlessed, st.Run, st.Clean, st.RecoveredAt)
	return nil
}

// Scan hands fn a fresh Record each time, from a read view taken at the
// start; fn may call the store's methods (as journal.Journal allows).
func (m *memStore) Scan(from uint64, fn func(r *Record, completed bool) error) error {
	m.mu.Lock()
	if m.dead {
		m.mu.Unlock()
		return errDeadStore
	}
	m.writeAsyncLocked()
	type item struct {
		r    Record
		done bool
	}
	var items []item
	for k, r := range m.recs {
		if k.period >= from {
			items = append(items, item{r, m.done[k]})
		}
	}
	for k, r := range m.volRecs {
		if k.period >= from {
			items = append(items, item{r, m.done[k]})
		}
	}
	m.mu.Unlock()
	sort.Slice(items, func(i, j int) bool {
		return memKey{items[i].r.Period, items[i].r.Seq}.less(memKey{items[j].r.Period, items[j].r.Seq})
	})
	for _, it := range items {
		r := it.r
		if err := fn(&r, it.done); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) DropBefore(period uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDeadStore
	}
	if period > m.state.LastBlessed {
		m.violate("DropBefore(%d) above the durable LastBlessed=%d", period, m.state.LastBlessed)
	}
	for k := range m.recs {
		if k.period < period {
			delete(m.recs, k)
		}
	}
	for k := range m.volRecs {
		if k.period < period {
			delete(m.volRecs, k)
		}
	}
	for k := range m.done {
		if k.period < period {
			delete(m.done, k)
		}
	}
	for k := range m.durableDone {
		if k.period < period {
			delete(m.durableDone, k)
		}
	}
	m.events.add("dropbefore %d", period)
	return nil
}

// LastSeq writes the queue unsynced, as the journal does.
func (m *memStore) LastSeq() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writeAsyncLocked()
	return m.nextSeq - 1, nil
}

func (m *memStore) Syncs() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

// records returns every record visible now, in key order, with whether
// its completion is recorded.
func (m *memStore) records() []scannedRec {
	var out []scannedRec
	_ = m.Scan(0, func(r *Record, done bool) error {
		out = append(out, scannedRec{*r, done})
		return nil
	})
	return out
}

type scannedRec struct {
	r    Record
	done bool
}

func (m *memStore) durableState() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneState(m.state)
}

// manualCompletions makes the completions of tr deterministic: it stops
// the completer's goroutine, so that idle intents wait on its list until
// the test calls tr.comp.flush() (or Close records them). This reaches
// into completer's fields: keep it in step with coarse.go.
func manualCompletions(tr *Tracker) {
	c := tr.comp
	c.stop()
	c.mu.Lock()
	c.done = false
	c.wake = make(chan struct{}, 1) // nobody reads it: add never blocks
	c.quit = make(chan struct{})
	c.mu.Unlock()
}

// pendingCompletions is the number of idle intents whose completion has
// not been recorded yet.
func pendingCompletions(tr *Tracker) int {
	tr.comp.mu.Lock()
	defer tr.comp.mu.Unlock()
	return len(tr.comp.list)
}

func (m *memStore) isLost() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

// listingBacking adds the optional Backing methods that the query uses
