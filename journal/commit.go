package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// request is one Append, SaveState or flush waiting for the committer.
type request struct {
	recs  []*checkpoint.Record
	state *checkpoint.State
	// reopen: completion markers to delete, as keys (Reopen).
	reopen [][]byte
	// table: rows of the HSM's table to write or delete (PutTable), in
	// the same transaction as everything else of the request.
	table []TableRow
	// noSync: the caller only needs what was queued before it to be
	// written (visible to reads), not synced (Scan's flush).
	noSync bool
	// lastSeq, if set, gets the highest Seq handed out once the batch
	// is written (LastSeq).
	lastSeq *uint64
	done    chan error // buffered: the committer never blocks on a waiter
}

// maxBatchRequests bounds how many requests one batch takes, so that a
// flood of appenders still sees a sync now and then.
const maxBatchRequests = 4096

// asyncLinger is how long queued async records may wait for more before
// they are written (see committer). A crash loses them whether they were
// queued or written unsynced; the durable directory intents that cover
// them are what a query after an unclean end answers from.
const asyncLinger = time.Millisecond

// Append assigns Seq to each record and returns once all of them are on
// the device. Concurrent calls share syncs. On error none of the records
// is durable (some may still appear in a Scan).
func (j *Journal) Append(recs []*checkpoint.Record) error {
	if len(recs) == 0 {
		return nil
	}
	for _, r := range recs {
		if !r.Op.Valid() {
			return fmt.Errorf("journal: append: invalid op %d for %q", r.Op, r.Path)
		}
		if tooLong(r) {
			return fmt.Errorf("journal: append: path, consumer or name longer than %d bytes", maxPathLen)
		}
	}
	return j.submit(&request{recs: recs})
}

// LoadState returns the durable state; a new journal returns the zero State.
func (j *Journal) LoadState() (checkpoint.State, error) {
	var st checkpoint.State
	if err := j.enter(); err != nil {
		return st, err
	}
	defer j.leave()
	err := j.db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, metaKey(metaState))
		if err != nil || v == nil {
			return err
		}
		st, err = decodeState(v)
		return err
	})
	if err != nil {
		return checkpoint.State{}, fmt.Errorf("journal %s: load state: %w", j.dir, withErrno(err))
	}
	return st, nil
}

// LastSeq returns the highest Seq handed out, after writing (unsynced)
// the records that AppendAsync queued before the call: a record appended
// after it returns gets a higher one.
func (j *Journal) LastSeq() (uint64, error) {
	var seq uint64
	if err := j.submit(&request{noSync: true, lastSeq: &seq}); err != nil {
		return 0, fmt.Errorf("journal %s: last seq: %w", j.dir, err)
	}
	return seq, nil
}

// SaveState makes st durable before it returns. It goes through the
// committer so that it shares a sync with concurrent Appends.
func (j *Journal) SaveState(st checkpoint.State) error {
	return j.submit(&request{state: &st})
}

// tooLong: a string of r is longer than a reader accepts (decodeRecord).
func tooLong(r *checkpoint.Record) bool {
	if len(r.Path) > maxPathLen || len(r.Path2) > maxPathLen || len(r.Consumer) > maxPathLen {
		return true
	}
	for _, n := range r.Names {
		if len(n) > maxPathLen {
			return true
		}
	}
	return false
}

// AppendAsync queues records to be written with the committer's next
// batch and returns at once: they are neither durable nor visible when it
// returns. Every Scan and every Append or SaveState that starts after
// AppendAsync returned writes them first. If writing them fails, Lost
// reports true from then on. The tracker uses it for the fine records
// that a durable directory intent already covers.
func (j *Journal) AppendAsync(recs []*checkpoint.Record) {
	if len(recs) == 0 {
		return
	}
	for _, r := range recs {
		if !r.Op.Valid() || tooLong(r) {
			j.lost.Store(true)
			j.log.Error("journal: async record refused", "op", r.Op, "path", r.Path)
			return
		}
	}
	j.asyncMu.Lock()
	j.asyncQ = append(j.asyncQ, recs...)
	j.asyncMu.Unlock()
	select {
	case j.asyncWake <- struct{}{}:
	default:
	}
}

// Lost reports whether records queued with AppendAsync may have been lost
// since Open.
func (j *Journal) Lost() bool { return j.lost.Load() }

// takeAsync empties the async queue.
func (j *Journal) takeAsync() []*checkpoint.Record {
	j.asyncMu.Lock()
	defer j.asyncMu.Unlock()
	q := j.asyncQ
	j.asyncQ = nil
	return q
}

func (j *Journal) submit(r *request) error {
	if err := j.enter(); err != nil {
		return err
	}
	defer j.leave()
	r.done = make(chan error, 1)
	// Close waits for us (active), so the committer is still running
	// and will answer.
	j.reqs <- r
	return <-r.done
}

// committer is the only goroutine that writes intents and state: it takes
// every request pending, commits them together and syncs once.
func (j *Journal) committer() {
	defer close(j.committerDone)
	batch := make([]*request, 0, 64)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	stop := func() {
		if q := j.takeAsync(); len(q) > 0 {
			j.commit(nil, q)
		}
	}
	for {
		batch = batch[:0]
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
		case <-j.asyncWake:
			// Nobody waits for async records and they need no sync:
			// a serial stream of them (one per chmod) gathers for a
			// moment and costs one badger write instead of one each.
			// A request (a Scan's flush, a synced Append) ends the
			// wait at once and takes them along.
			linger.Reset(asyncLinger)
			select {
			case r := <-j.reqs:
				linger.Stop()
				batch = append(batch, r)
			case <-linger.C:
			case <-j.stop:
				stop()
				return
			}
		case <-j.stop:
			stop()
			return
		}
	collect:
		for len(batch) < maxBatchRequests {
			select {
			case r := <-j.reqs:
				batch = append(batch, r)
			default:
				break collect
			}
		}
		// The async queue is taken after the requests, so that every
		// record queued before a request was submitted is in its batch.
		err := j.commit(batch, j.takeAsync())
		for i, r := range batch {
			if r.lastSeq != nil { // nextSeq starts at 1
				*r.lastSeq = j.nextSeq - 1
			}
			r.done <- err
			batch[i] = nil
		}
	}
}

// commit writes one batch with the queued async records, and syncs it
// unless no request needs a sync. It runs on the committer only.
func (j *Journal) commit(batch []*request, async []*checkpoint.Record) (err error) {
	if len(async) > 0 {
		defer func() {
			if err != nil {
				j.lost.Store(true)
				j.log.Error("journal: fine records lost; queries will list whole directories", "records", len(async), "err", err)
			}
		}()
	}
	if j.failed != nil {
		return fmt.Errorf("journal %s: an earlier sync failed, the journal must be reopened: %w", j.dir, j.failed)
	}
	needSync := slices.ContainsFunc(batch, func(r *request) bool { return !r.noSync })
	if !needSync && len(async) == 0 {
		return nil
	}
	if err := j.checkSpace(); err != nil {
		return err
	}
	if len(async) > 0 {
		// The queue's Seqs come first: a record queued before a request
		// was submitted must read as earlier than it (AsyncStore: later
		// writes write the queue first); one queued while the batch was
		// collected is concurrent with it, and either order is true.
		batch = append([]*request{{recs: async, noSync: true}}, batch...)
	}
	j.assignSeqs(batch)

	j.commitMu.Lock()
	defer j.commitMu.Unlock()
	w := &txnWriter{j: j, txn: j.db.NewTransaction(true)}
	defer func() { w.txn.Discard() }()
	if err := w.writeBatch(batch); err != nil {
		return j.fail(err)
	}
	if !needSync {
		if err := w.txn.Commit(); err != nil {
			return j.fail(fmt.Errorf("commit: %w", withErrno(err)))
		}
		return nil
	}
	return j.fail(j.commitSync(w.txn, w.recs))
}

// assignSeqs gives every record of the batch its Seq before anything is
// written; a Seq is never handed out again, even if the batch fails: a
// failed commit may have reached the log.
func (j *Journal) assignSeqs(batch []*request) {
	for _, r := range batch {
		for _, rec := range r.recs {
			rec.Seq = j.nextSeq
			j.nextSeq++
		}
	}
}

// txnWriter writes a batch into transactions: when one is full it is
// committed and synced (see "Durability": a sync after each transaction)
// and the writing carries on in a new one. recs counts the records of the
// current transaction, for Options.OnSync.
type txnWriter struct {
	j    *Journal
	txn  *badger.Txn
	recs int
}

// do runs op on the current transaction, in a new one if it is full.
func (w *txnWriter) do(op func(txn *badger.Txn) error) error {
	err := op(w.txn)
	if !errors.Is(err, badger.ErrTxnTooBig) {
		return err
	}
	if err := w.j.commitSync(w.txn, w.recs); err != nil {
		return err
	}
	w.recs = 0
	w.txn = w.j.db.NewTransaction(true)
	return op(w.txn)
}

// writeBatch writes the batch's completions taken back, records, the
// latest state and the next Seq.
func (w *txnWriter) writeBatch(batch []*request) error {
	// One buffer for every key and value of the batch: badger keeps the
	// slices until the commit, and sub-slices of a buffer that append
	// reallocates stay valid.
	size := 64
	for _, r := range batch {
		for _, rec := range r.recs {
			size += recKeyLen + recordSizeHint(rec)
		}
	}
	buf := make([]byte, 0, size)
	var state *checkpoint.State
	for _, r := range batch {
		if r.state != nil {
			state = r.state // the latest request wins
		}
		for _, k := range r.reopen {
			if err := w.do(func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
				return err
			}
		}
		if err := w.writeTable(r.table); err != nil {
			return err
		}
		for _, rec := range r.recs {
			start := len(buf)
			buf = append(buf, intentKey(rec.Period, rec.Seq)...)
			mid := len(buf)
			buf = appendRecord(buf, rec)
			k, v := buf[start:mid:mid], buf[mid:len(buf):len(buf)]
			if err := w.do(func(txn *badger.Txn) error { return txn.Set(k, v) }); err != nil {
				return err
			}
			w.recs++
		}
	}
	if state != nil {
		v := encodeState(*state)
		if err := w.do(func(txn *badger.Txn) error { return txn.Set(metaKey(metaState), v) }); err != nil {
			return err
		}
	}
	next := binary.BigEndian.AppendUint64(nil, w.j.nextSeq)
	return w.do(func(txn *badger.Txn) error { return txn.Set(metaKey(metaSeq), next) })
}

// commitSync commits txn, which holds records records, and syncs it; the
// caller holds commitMu.
func (j *Journal) commitSync(txn *badger.Txn, records int) error {
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit: %w", withErrno(err))
	}
	return j.sync(records)
}

// fail wraps a batch error, and remembers it when it poisons the journal:
// any error after the first Set may have left log pages whose sync state
// is unknown.
func (j *Journal) fail(err error) error {
	if err == nil {
		return nil
	}
	j.failed = err
	return fmt.Errorf("journal %s: append: %w", j.dir, err)
}

// sync is the one place that calls db.Sync, so that Syncs counts them all
// and OnSync sees them all. records is how many records the sync makes
// durable (0 for metadata and state only).
func (j *Journal) sync(records int) error {
	j.syncs.Add(1)
	start := time.Now()
	err := j.db.Sync()
	if j.onSync != nil {
		// On the committer, after the sync: the hook delays the next
		// batch by its own cost, never a waiter of this one.
		j.onSync(time.Since(start), records)
	}
	if err != nil {
		return fmt.Errorf("sync: %w", withErrno(err))
	}
	return nil
}
