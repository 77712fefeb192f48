package journal

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Scan calls fn for every record with Period >= from, in (period, seq)
// order, with whether its completion is recorded. Each call gets a fresh
// Record, which fn may keep. Scan reads in one badger read transaction: writes made while
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
