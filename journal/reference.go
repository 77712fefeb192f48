package journal

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hsmfs/hsmfs/internal/rate"
)

// ReferenceSyncedRate is the benchmark reference for durable intents
// (make bench): badger's own speed at one synced transaction per intent,
// with the given concurrency, in a fresh database in dir. badger batches
// concurrent commits itself (one fsync covers a batch), so this is what
// the journal would do with no group commit of its own. It lives here
// because journal is the only package that imports badger.
func ReferenceSyncedRate(ctx context.Context, dir string, writers int, dur time.Duration, max int) (float64, error) {
	opts := badger.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil).WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return 0, fmt.Errorf("badger open %s: %w", dir, err)
	}
	defer db.Close()
	val := make([]byte, 48) // about an intent record: op, period, flags, path hash
	r, _, err := rate.Run(ctx, writers, dur, max, func(w, i int) error {
		key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(w)), uint64(i))
		return db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) })
	})
	if err != nil && ctx.Err() == nil {
		return 0, fmt.Errorf("badger update: %w", err)
	}
	return r, err
}
