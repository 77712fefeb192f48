package journal

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
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
	var n atomic.Int64
	var stop atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	per := max / writers
	val := make([]byte, 48) // about an intent record: op, period, flags, path hash
	start := time.Now()
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			key := make([]byte, 16)
			for i := 0; i < per && !stop.Load() && ctx.Err() == nil; i++ {
				binary.BigEndian.PutUint64(key, uint64(w))
				binary.BigEndian.PutUint64(key[8:], uint64(i))
				err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) })
				if err != nil {
					once.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, fmt.Errorf("badger update: %w", firstErr)
	}
	return float64(n.Load()) / el.Seconds(), ctx.Err()
}
