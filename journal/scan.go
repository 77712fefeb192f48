package journal

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Complete records the completion of intent (period, seq), without a sync.
func (j *Journal) Complete(period, seq uint64) error {
	err := j.write(func(txn *badger.Txn) error {
		return txn.Set(completionKey(period, seq), nil)
	})
	if err != nil {
		return fmt.Errorf("journal %s: complete %d/%d: %w", j.dir, period, seq, err)
	}
	return nil
}

// Reopen removes the completion of intent (period, seq) and returns once
// that is durable: a modification that joins a completed intent must be
// reported in flight after any crash, a power cut included. It goes
// through the committer, so concurrent Reopens and Appends share a sync.
func (j *Journal) Reopen(period, seq uint64) error {
	err := j.submit(&request{reopen: [][]byte{completionKey(period, seq)}})
	if err != nil {
		return fmt.Errorf("journal %s: reopen %d/%d: %w", j.dir, period, seq, err)
	}
	return nil
}

// write runs fn in one unsynced transaction, holding commitMu shared (see
// "Durability" in the package doc).
func (j *Journal) write(fn func(txn *badger.Txn) error) error {
	if err := j.enter(); err != nil {
		return err
	}
	defer j.leave()
	if err := j.checkSpace(); err != nil {
		return err
	}
	j.commitMu.RLock()
	defer j.commitMu.RUnlock()
	return withErrno(j.db.Update(fn))
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

// Scan calls fn for every record with Period >= from, in (period, seq)
// order, with whether its completion is recorded. Each call gets a fresh
// Record, which fn may keep. Scan reads one snapshot: writes made while
// it runs (by fn too) are not seen. An error of fn ends the scan and is
// returned as it is; a record that does not decode ends it with an error
// wrapping ErrDamaged. fn may call the Journal's methods, except Close,
// which would wait for this Scan to end.
func (j *Journal) Scan(from uint64, fn func(r *checkpoint.Record, completed bool) error) error {
	if err := j.enter(); err != nil {
		return err
	}
	defer j.leave()
	// Records queued with AppendAsync before this call must be seen. If
	// writing them fails, Lost says so and the caller compensates; the
	// scan still reads what is there.
	r := &request{noSync: true, done: make(chan error, 1)}
	j.reqs <- r
	<-r.done
	var fnErr error
	err := j.db.View(func(txn *badger.Txn) error {
		return scanTxn(txn, from, func(r *checkpoint.Record, completed bool) error {
			fnErr = fn(r, completed)
			return fnErr
		})
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("journal %s: scan: %w", j.dir, withErrno(err))
	}
	return nil
}

// scanTxn walks the intents and the completions side by side: both are
// in (period, seq) order, so one pass over each answers "completed?"
// without a lookup per record.
func scanTxn(txn *badger.Txn, from uint64, fn func(r *checkpoint.Record, completed bool) error) error {
	its := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixIntent}})
	defer its.Close()
	cs := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCompletion}})
	defer cs.Close()
	cs.Seek(completionKey(from, 0))
	for its.Seek(intentKey(from, 0)); its.Valid(); its.Next() {
		item := its.Item()
		key := item.Key()
		period, seq, ok := parseRecKey(key)
		if !ok {
			return fmt.Errorf("%w: malformed intent key %x", ErrDamaged, key)
		}
		completed := false
		for ; cs.Valid(); cs.Next() {
			// Compare the (period, seq) parts only: the prefixes differ.
			c := bytes.Compare(cs.Item().Key()[1:], key[1:])
			if c >= 0 {
				completed = c == 0
				break
			}
		}
		r := &checkpoint.Record{Period: period, Seq: seq}
		err := item.Value(func(v []byte) error { return decodeRecord(v, r) })
		if err != nil {
			return fmt.Errorf("record %d/%d: %w", period, seq, err)
		}
		if err := fn(r, completed); err != nil {
			return err
		}
	}
	return nil
}

// maxDropPrefixes bounds the prefixes of one DropPrefix call, whose cost
// grows with tables times prefixes.
const maxDropPrefixes = 256

// DropBefore deletes every record and completion with Period < period.
//
// It uses badger's DropPrefix, one prefix per period ('i'/'c' + period):
// on a million records it took a tenth of the time of deleting the keys
// in chunks of transactions, and it leaves no tombstones for later Scans
// to skip (figures in measure_test.go). DropPrefix refuses concurrent
// writes, so DropBefore holds commitMu exclusively: Append, Complete and
// Reopen wait for it instead of failing.
//
// It is not synced as such, but DropPrefix flushes the memtables, which
// makes every write before it durable, and if a crash interrupts it
// some dropped records come back until the next DropBefore.
func (j *Journal) DropBefore(period uint64) error {
	if err := j.enter(); err != nil {
		return err
	}
	defer j.leave()
	if err := j.checkSpace(); err != nil {
		return fmt.Errorf("journal %s: drop before period %d: %w", j.dir, period, err)
	}
	// Listing under the lock makes the list exact: no commit can add a
	// period meanwhile.
	j.commitMu.Lock()
	defer j.commitMu.Unlock()
	var prefixes [][]byte
	err := j.db.View(func(txn *badger.Txn) error {
		for _, kind := range []byte{prefixIntent, prefixCompletion} {
			p, err := periodPrefixes(txn, kind, period)
			if err != nil {
				return err
			}
			prefixes = append(prefixes, p...)
		}
		return nil
	})
	for err == nil && len(prefixes) > 0 {
		n := min(len(prefixes), maxDropPrefixes)
		err = withErrno(j.db.DropPrefix(prefixes[:n]...))
		prefixes = prefixes[n:]
	}
	if err != nil {
		return fmt.Errorf("journal %s: drop before period %d: %w", j.dir, period, err)
	}
	return nil
}

// periodPrefixes returns the key prefixes (kind + period) of the periods
// below end that have keys of that kind. It seeks from one period to the
// next, so it costs one seek per period, not one step per record.
func periodPrefixes(txn *badger.Txn, kind byte, end uint64) ([][]byte, error) {
	var out [][]byte
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kind}})
	defer it.Close()
	for it.Seek([]byte{kind}); it.Valid(); {
		period, _, ok := parseRecKey(it.Item().Key())
		if !ok {
			return nil, fmt.Errorf("%w: malformed key %x", ErrDamaged, it.Item().Key())
		}
		if period >= end {
			break
		}
		out = append(out, recKey(kind, period, 0)[:9])
		if period == ^uint64(0) {
			break
		}
		it.Seek(recKey(kind, period+1, 0))
	}
	return out, nil
}
