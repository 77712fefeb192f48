package journal

import (
	"fmt"
	"os"
	"path/filepath"
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

// carrySuffix names the fresh journal that ResetKeepingTable builds
// before it sets the old one aside.
const carrySuffix = ".new"

// ResetKeepingTable is SetAside for a journal that may hold the HSM's
// table (tiers, file states, objects to collect): a released file's
// content is only in its tier, and only the table says where. It builds
// a fresh journal holding the table at DIR.new first, then sets DIR
// aside, then renames DIR.new to DIR. A crash in between leaves DIR.new,
// which Open then asks for by name rather than starting a journal
// without the table. It returns where the old journal went and how many
// rows it carried.
func ResetKeepingTable(dir string) (string, int, error) {
	if err := exists(dir); err != nil {
		return "", 0, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return "", 0, err
	}
	n, err := carryTable(dir, dir+carrySuffix)
	lock.Close()
	if err != nil {
		return "", 0, fmt.Errorf("the HSM's tiers and file states could not be read from the journal, so it was left as it is (released files need them): %w", err)
	}
	to, err := SetAside(dir)
	if err != nil {
		return to, n, err
	}
	if n == 0 {
		return to, 0, nil
	}
	if err := os.Rename(dir+carrySuffix, dir); err != nil {
		return to, n, fmt.Errorf("journal: reset: rename %s to %s: %w", dir+carrySuffix, dir, err)
	}
	return to, n, syncDir(filepath.Dir(dir))
}

// carryTable copies the table of the journal at from into a fresh
// journal at to (none is made for a journal without a table).
func carryTable(from, to string) (int, error) {
	log := discardLogger()
	db, err := openBadger(from, log, true)
	if err != nil {
		if db, err = openBadger(from, log, false); err != nil {
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
		return 0, fmt.Errorf("journal %s: the HSM's table: %w", from, withErrno(err))
	}
	if len(rows) == 0 {
		return 0, nil
	}
	os.RemoveAll(to) // what an earlier, interrupted reset left
	j, err := Open(to, m.backing, Options{})
	if err != nil {
		return 0, err
	}
	if err := j.PutTable(rows); err != nil {
		j.Close()
		return 0, err
	}
	return len(rows), j.Close()
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
