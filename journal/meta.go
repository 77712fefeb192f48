package journal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/hsmfs/hsmfs/checkpoint"
)

// initMeta checks the metadata of an existing journal, or writes it
// (durably) into a new one, and loads the next Seq.
func (j *Journal) initMeta() error {
	m, err := readMeta(j.db)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.dir, err)
	}
	if m.empty {
		if err := j.checkSpace(); err != nil {
			return err
		}
		txn := j.db.NewTransaction(true)
		defer txn.Discard()
		if err := txn.Set(metaKey(metaFormat), []byte{formatVersion}); err != nil {
			return fmt.Errorf("journal %s: initialise: %w", j.dir, withErrno(err))
		}
		if err := txn.Set(metaKey(metaBacking), []byte(j.backing)); err != nil {
			return fmt.Errorf("journal %s: initialise: %w", j.dir, withErrno(err))
		}
		if err := txn.Commit(); err != nil {
			return fmt.Errorf("journal %s: initialise: %w", j.dir, withErrno(err))
		}
		if err := j.sync(0); err != nil {
			return fmt.Errorf("journal %s: initialise: %w", j.dir, err)
		}
		j.nextSeq = 1
		return nil
	}
	if m.backing != j.backing {
		return fmt.Errorf("journal %s: %w: it records %s, not %s", j.dir, ErrOtherBacking, m.backing, j.backing)
	}
	j.nextSeq = m.nextSeq
	return nil
}

// meta is what readMeta found.
type meta struct {
	empty   bool // no key at all: a new journal
	format  int
	backing string
	state   checkpoint.State
	nextSeq uint64 // the least Seq above every one in use
}

// readMeta reads and validates the metadata; a journal that has keys but
// not valid metadata is damaged.
func readMeta(db *badger.DB) (meta, error) {
	var m meta
	err := db.View(func(txn *badger.Txn) error {
		format, err := getValue(txn, metaKey(metaFormat))
		if err != nil {
			return err
		}
		if format == nil {
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			m.empty = !it.Valid()
			it.Close()
			if m.empty {
				return nil
			}
			return fmt.Errorf("%w: it holds data but no format version", ErrDamaged)
		}
		if len(format) != 1 || format[0] != formatVersion {
			return fmt.Errorf("%w: unknown format version %x (written by a newer hsmfs?)", ErrDamaged, format)
		}
		m.format = int(format[0])
		backing, err := getValue(txn, metaKey(metaBacking))
		if err != nil {
			return err
		}
		if len(backing) == 0 {
			return fmt.Errorf("%w: it records no backing directory", ErrDamaged)
		}
		m.backing = string(backing)
		if v, err := getValue(txn, metaKey(metaState)); err != nil {
			return err
		} else if v != nil {
			if m.state, err = decodeState(v); err != nil {
				return err
			}
		}
		m.nextSeq = 1
		if v, err := getValue(txn, metaKey(metaSeq)); err != nil {
			return err
		} else if v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: next seq of %d bytes", ErrDamaged, len(v))
			}
			m.nextSeq = binary.BigEndian.Uint64(v)
		}
		// The counter is written in the same transactions as the
		// intents, so this only guards against a counter that went
		// missing: Seq must never be reused.
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte{prefixIntent}})
		defer it.Close()
		it.Seek(intentKey(^uint64(0), ^uint64(0)))
		if it.Valid() {
			_, seq, ok := parseRecKey(it.Item().Key())
			if !ok {
				return fmt.Errorf("%w: malformed intent key %x", ErrDamaged, it.Item().Key())
			}
			m.nextSeq = max(m.nextSeq, seq+1)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrDamaged) {
		err = fmt.Errorf("%w: reading metadata: %w", ErrDamaged, withErrno(err))
	}
	return m, err
}

// getValue returns a copy of the value of key, or nil if there is none.
func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if v == nil && err == nil {
		v = []byte{}
	}
	return v, err
}
