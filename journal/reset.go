package journal

import (
	"fmt"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Companions are the files that the daemon keeps beside its journal
// DIR, as DIR+suffix: its log and the tree index of the check for
// changes made while hsmfs did not run, with that index's log of names.
var Companions = []string{".log", ".tree", ".tree.log"}

// SetAside is the deliberate way to start over with a journal that is
// damaged (or that belongs to a BACKING that moved): it moves the whole
// directory to DIR.reset-TIMESTAMP, and each companion that exists to
// DIR.reset-TIMESTAMP+suffix, deleting nothing, and returns the new
// name. The next mount creates a fresh journal, which knows nothing of
// earlier changes (and takes a fresh index and log): the consumer has to
// copy everything once. It refuses while the journal is mounted.
func SetAside(dir string) (string, error) {
	if err := exists(dir); err != nil {
		return "", err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	to := dir + ".reset-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, to); err != nil {
		return "", fmt.Errorf("journal: reset: %w", err)
	}
	for _, suffix := range Companions {
		if err := os.Rename(dir+suffix, to+suffix); err != nil && !os.IsNotExist(err) {
			return to, fmt.Errorf("journal: reset: moved the journal to %s, but not %s: %w", to, dir+suffix, err)
		}
	}
	return to, nil
}

// exists fails unless dir is a directory, saying so in a user's words.
func exists(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		return fmt.Errorf("no journal at %s", dir)
	case err != nil:
		return fmt.Errorf("journal %s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("journal %s is not a directory", dir)
	}
	return nil
}

// CarryTable copies the HSM's table (tiers, file states, objects to
// collect) from the journal set aside at aside into a fresh journal at
// dir, and returns how many rows it carried. A released file's content is
// only in its tier, and only the table says where: a reset must not lose
// it. A journal set aside with no table carries nothing and creates
// nothing.
func CarryTable(aside, dir string) (int, error) {
	log := discardLogger()
	db, err := openBadger(aside, log, true)
	if err != nil {
		if db, err = openBadger(aside, log, false); err != nil {
			return 0, err
		}
	}
	m, err := readMeta(db)
	var rows []TableRow
	if err == nil {
		err = db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixTable}})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				rows = append(rows, TableRow{Name: string(it.Item().Key()[1:]), Value: v})
			}
			return nil
		})
	}
	db.Close()
	if err != nil {
		return 0, fmt.Errorf("journal %s: the HSM's table: %w", aside, withErrno(err))
	}
	if len(rows) == 0 {
		return 0, nil
	}
	j, err := Open(dir, m.backing, Options{})
	if err != nil {
		return 0, err
	}
	if err := j.PutTable(rows); err != nil {
		j.Close()
		return 0, err
	}
	return len(rows), j.Close()
}
