package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Open opens (creating if needed) the journal in dir for the BACKING
// directory backing. See the package doc for the errors it reports.
func Open(dir, backing string, opt Options) (*Journal, error) {
	absBacking, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("journal: backing path %q: %w", backing, err)
	}
	// Absolute, so that statfs and the messages do not depend on a
	// later chdir of the daemon.
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("journal: path %q: %w", dir, err)
	}
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if _, err := os.Stat(dir + carrySuffix); err == nil {
			// A fresh journal here would not know the tiers and file
			// states that a released file needs.
			return nil, fmt.Errorf("journal %s: %w: a journal reset was interrupted; its fresh journal, with the HSM's table, is %s: rename it to %s",
				dir, ErrDamaged, dir+carrySuffix, dir)
		}
	}
	j := &Journal{
		dir:     dir,
		backing: absBacking,
		reserve: opt.ReserveBytes,
		onSync:  opt.OnSync,
	}
	if j.reserve == 0 {
		j.reserve = DefaultReserveBytes
	}
	j.log = opt.Logger
	if j.log == nil {
		j.log = discardLogger()
	}
	j.log = j.log.With("journal", dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", dir, err)
	}
	// Who may write the directory is checked before anything in it is
	// opened: a lock file planted by another user must not be written.
	if err := checkPrivate(dir); err != nil {
		return nil, err
	}
	if j.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	if err := makePrivate(dir, j.log); err != nil {
		j.lock.Close()
		return nil, err
	}
	if j.db, err = openBadger(dir, j.log, false); err != nil {
		j.lock.Close()
		return nil, err
	}
	if err := j.initMeta(); err != nil {
		j.db.Close()
		j.lock.Close()
		return nil, err
	}
	j.reqs = make(chan *request, 256)
	j.asyncWake = make(chan struct{}, 1)
	j.stop = make(chan struct{})
	j.committerDone = make(chan struct{})
	go j.committer()
	return j, nil
}

// lockDir takes the exclusive flock that makes a journal single-mount.
// The pid written into the file only serves the error message of the
// next one who tries.
//
// The file is opened without following a symlink, and must be a regular
// file of the daemon's user: the pid is written into it, and a link
// planted there must not lead that write elsewhere.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: open lock file: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || !ownedByUs(fi) {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w: %s is not a regular file of uid %d", dir, ErrNotPrivate, path, os.Geteuid())
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = "pid " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("journal %s: %w (%s holds %s)", dir, ErrInUse, holder, path)
		}
		return nil, fmt.Errorf("journal: lock %s: %w", path, err)
	}
	// Best effort: the lock, not the content, is what excludes others.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// removeEmptyMemtables deletes memtable logs of size 0. badger creates a
// memtable file and then truncates it to its size; a process killed
// between the two leaves an empty .mem file, which badger then refuses to
// open ("Create a new file"), although it holds no entry. Deleting it
// loses nothing. (Seen in the kill-mode crash tests.)
func removeEmptyMemtables(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".mem") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("journal %s: remove empty memtable %s: %w", dir, e.Name(), err)
		}
		log.Warn("journal: removed an empty memtable file left by a crash", "file", p)
	}
	return nil
}

// openBadger opens the database with a small memory footprint. badger can
// panic on some damaged files; that too is reported as ErrDamaged.
func openBadger(dir string, log *slog.Logger, readOnly bool) (db *badger.DB, err error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithNumMemtables(3).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumCompactors(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithReadOnly(readOnly).
		WithLogger(badgerLogger{log})
	if err := checkLooksLikeJournal(dir); err != nil {
		return nil, err
	}
	if !readOnly {
		if err := removeEmptyMemtables(dir, log); err != nil {
			return nil, err
		}
	}
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("journal %s: %w: badger panicked while opening: %v", dir, ErrDamaged, p)
		}
	}()
	db, err = badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("journal %s: %w: %w", dir, ErrInUse, err)
		}
		return nil, fmt.Errorf("journal %s: %w: badger cannot open it: %w", dir, ErrDamaged, withErrno(err))
	}
	return db, nil
}

// checkLooksLikeJournal refuses a directory that holds files but no
// MANIFEST. Given one, badger would start a new database there and delete
// the tables that its new, empty MANIFEST does not list: a journal that
// lost its MANIFEST would be wiped, and a directory named by mistake would
// be filled with badger's files.
func checkLooksLikeJournal(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	var others []string
	for _, e := range entries {
		switch e.Name() {
		case "MANIFEST":
			return nil
		case lockName:
		default:
			others = append(others, e.Name())
		}
	}
	if len(others) == 0 {
		return nil // a new journal
	}
	if len(others) > 3 {
		others = append(others[:3], "...")
	}
	return fmt.Errorf("journal %s: %w: no MANIFEST, but it holds %s (not a journal, or one that lost its MANIFEST)",
		dir, ErrDamaged, strings.Join(others, ", "))
}
