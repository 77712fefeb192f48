package journal

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Reference is the benchmark reference for durable intents (make bench):
// a bare badger database written one synced transaction per intent.
// badger batches concurrent commits itself (one fsync covers a batch),
// so its rate is what the journal would do with no group commit of its
// own. It lives here because journal is the only package that imports
// badger; the loop that drives it is the bench's (tools/bench).
type Reference struct{ db *badger.DB }

// OpenReference opens a fresh reference database in dir.
func OpenReference(dir string) (*Reference, error) {
	opts := badger.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil).WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("badger open %s: %w", dir, err)
	}
	return &Reference{db: db}, nil
}

// refValue is about an intent record: op, period, flags, path hash.
var refValue = make([]byte, 48)

// Put writes writer w's i-th intent in its own synced transaction. It may
// be called from many goroutines.
func (r *Reference) Put(w, i int) error {
	key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(w)), uint64(i))
	if err := r.db.Update(func(txn *badger.Txn) error { return txn.Set(key, refValue) }); err != nil {
		return fmt.Errorf("badger update: %w", err)
	}
	return nil
}

// Close closes the reference database.
func (r *Reference) Close() error { return r.db.Close() }
