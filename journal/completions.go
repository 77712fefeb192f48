package journal

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Completions: the post-event of each intent (unsynced), and taking it
// back when a modification joins a completed intent (synced).

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
