package journal

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Report is what Check found in a journal.
type Report struct {
	Dir     string
	Format  int
	Backing string
	State   checkpoint.State
	NextSeq uint64
	// Records counts the intents, Damaged those that do not decode.
	Records, Damaged uint64
	// Periods counts the distinct periods of the intents, from
	// MinPeriod to MaxPeriod (both 0 if there is none).
	Periods              uint64
	MinPeriod, MaxPeriod uint64
	// Completions counts the completion markers, Orphans those whose
	// intent is missing (harmless: a completion written after its
	// intent was dropped).
	Completions, Orphans uint64
	// ReadOnly tells whether badger could open the journal read-only.
	// When it could not (its log needs replaying), Check opened it
	// normally, which lets badger truncate a torn tail of its log as
	// every mount does.
	ReadOnly bool
}

// Check verifies the journal in dir without a mount: metadata readable,
// format version known, every intent decodes. It needs the journal's lock,
// so it fails with ErrInUse while the journal is mounted. A damaged
// journal returns an error wrapping ErrDamaged together with what could
// be counted.
func Check(dir string) (Report, error) {
	rep := Report{Dir: dir}
	if err := exists(dir); err != nil {
		return rep, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return rep, err
	}
	defer lock.Close()
	log := discardLogger()
	db, roErr := openBadger(dir, log, true)
	rep.ReadOnly = roErr == nil
	if roErr != nil {
		if errors.Is(roErr, ErrInUse) {
			return rep, roErr
		}
		var rwErr error
		if db, rwErr = openBadger(dir, log, false); rwErr != nil {
			return rep, fmt.Errorf("%w (read-only: %v)", rwErr, roErr)
		}
	}
	defer db.Close()

	m, err := readMeta(db)
	if err != nil {
		return rep, fmt.Errorf("journal %s: %w", dir, err)
	}
	if m.empty {
		return rep, nil
	}
	rep.Format, rep.Backing, rep.State, rep.NextSeq = m.format, m.backing, m.state, m.nextSeq

	var firstBad error
	err = db.View(func(txn *badger.Txn) error {
		its := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixIntent}})
		defer its.Close()
		var r checkpoint.Record
		for its.Rewind(); its.Valid(); its.Next() {
			item := its.Item()
			period, seq, ok := parseRecKey(item.Key())
			var bad error
			if !ok {
				bad = fmt.Errorf("%w: malformed intent key %x", ErrDamaged, item.Key())
			} else if err := item.Value(func(v []byte) error { return decodeRecord(v, &r) }); err != nil {
				bad = fmt.Errorf("record %d/%d: %w", period, seq, err)
			}
			if bad != nil {
				rep.Damaged++
				if firstBad == nil {
					firstBad = bad
				}
				continue
			}
			if rep.Records == 0 || period != rep.MaxPeriod {
				rep.Periods++
			}
			if rep.Records == 0 {
				rep.MinPeriod = period
			}
			rep.MaxPeriod = period
			rep.Records++
		}
		cs := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCompletion}})
		defer cs.Close()
		for cs.Rewind(); cs.Valid(); cs.Next() {
			rep.Completions++
			period, seq, ok := parseRecKey(cs.Item().Key())
			if !ok {
				rep.Damaged++
				if firstBad == nil {
					firstBad = fmt.Errorf("%w: malformed completion key %x", ErrDamaged, cs.Item().Key())
				}
				continue
			}
			if _, err := txn.Get(intentKey(period, seq)); errors.Is(err, badger.ErrKeyNotFound) {
				rep.Orphans++
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("journal %s: check: %w", dir, withErrno(err))
	}
	if firstBad != nil {
		return rep, fmt.Errorf("journal %s: %d damaged records, the first: %w", dir, rep.Damaged, firstBad)
	}
	return rep, nil
}

// Dump calls meta with what the journal's metadata says (Dir, Format,
// Backing, State, NextSeq of the Report), then fn for every intent of a
// journal that is not mounted, in (period, seq) order: `hsmfs journal
// dump`, for looking at what a journal holds after a crash. A journal in
// use fails with ErrInUse before meta is called.
func Dump(dir string, meta func(Report), fn func(r *checkpoint.Record, completed bool)) error {
	if err := exists(dir); err != nil {
		return err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	db, err := openBadger(dir, discardLogger(), true)
	readOnly := err == nil
	if err != nil {
		if db, err = openBadger(dir, discardLogger(), false); err != nil {
			return err
		}
	}
	defer db.Close()
	m, err := readMeta(db)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	meta(Report{Dir: dir, Format: m.format, Backing: m.backing, State: m.state, NextSeq: m.nextSeq, ReadOnly: readOnly})
	return db.View(func(txn *badger.Txn) error {
		return scanTxn(txn, 0, func(r *checkpoint.Record, completed bool) error {
			fn(r, completed)
			return nil
		})
	})
}
