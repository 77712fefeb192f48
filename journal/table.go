package journal

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The HSM's table: rows that internal/hsm encodes (tiers, the state of
// each archived file, tier objects to collect) and the journal keeps
// durably, apart from the periods: a bless never drops them, as a
// released file's content is only in its tier.

// TableRow is one row to write: Value nil deletes the row.
type TableRow struct {
	Name  string
	Value []byte
}

// maxTableName bounds a row's name, as maxPathLen bounds paths.
const maxTableName = 1024

// PutTable writes rows in one transaction and returns once they are
// durable (synced). It goes through the committer, so it shares a sync
// with concurrent Appends.
func (j *Journal) PutTable(rows []TableRow) error {
	for _, r := range rows {
		if r.Name == "" || len(r.Name) > maxTableName {
			return fmt.Errorf("journal %s: table row name of %d bytes", j.dir, len(r.Name))
		}
	}
	if err := j.submit(&request{table: rows}); err != nil {
		return fmt.Errorf("journal %s: table: %w", j.dir, err)
	}
	return nil
}

// ScanTable calls fn for every row of the table in name order, from one
// read transaction. fn must not keep value past its call.
func (j *Journal) ScanTable(fn func(name string, value []byte) error) error {
	if err := j.enter(); err != nil {
		return err
	}
	defer j.leave()
	var fnErr error
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixTable}, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error {
				fnErr = fn(string(item.Key()[1:]), v)
				return fnErr
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("journal %s: table: %w", j.dir, withErrno(err))
	}
	return nil
}

// writeTable writes a request's rows into the batch's transaction.
func (w *txnWriter) writeTable(rows []TableRow) error {
	for _, r := range rows {
		k := tableKey(r.Name)
		v := r.Value
		err := w.do(func(txn *badger.Txn) error {
			if v == nil {
				return txn.Delete(k)
			}
			return txn.Set(k, v)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
