package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/checkpoint"
)

var _ checkpoint.Store = (*Journal)(nil)

var (
	// ErrInUse: the journal is open elsewhere (another mount, in this
	// process or another one).
	ErrInUse = errors.New("journal is in use by another mount")
	// ErrOtherBacking: the journal records changes of another BACKING.
	ErrOtherBacking = errors.New("journal belongs to another backing directory")
	// ErrDamaged: the journal cannot be read as it is. Nothing was changed.
	ErrDamaged = errors.New("journal is damaged")
	// ErrClosed: the Journal was closed.
	ErrClosed = errors.New("journal is closed")
)

// DefaultReserveBytes is the free space that writes require when
// Options.ReserveBytes is 0.
const DefaultReserveBytes = 64 << 20

// lockName is our lock file inside the journal directory. badger keeps its
// own pid file, LOCK, beside it.
const lockName = "hsmfs.lock"

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// Logger receives badger's warnings and errors; nil discards them.
	Logger *slog.Logger
	// ReserveBytes is the free space below which writes fail with ENOSPC
	// instead of risking SIGBUS (see the package doc). 0 means
	// DefaultReserveBytes; a negative value disables the check.
	ReserveBytes int64
	// OnSync, if set, is called after every device sync, failed or not,
	// with its duration and the number of records it made durable (0 for
	// a sync of metadata or state only). It runs on the committer
	// goroutine, which writes nothing meanwhile: it must be quick (a
	// histogram observation) and must not call the Journal.
	OnSync func(d time.Duration, records int)
}

// Journal is a badger-backed checkpoint.Store. Its methods are safe for
// concurrent use.
type Journal struct {
	dir     string
	backing string
	reserve int64
	log     *slog.Logger
	db      *badger.DB
	lock    *os.File

	// commitMu is held exclusively by the committer from a transaction
	// commit to the end of the sync that covers it, and shared by every
	// other badger commit, so that no commit can rotate the memtable
	// between a batch and its sync (see "Durability" in the package doc).
	commitMu sync.RWMutex

	reqs          chan *request // to the committer
	stop          chan struct{} // closed by Close to end the committer
	committerDone chan struct{}

	syncs  atomic.Uint64
	onSync func(d time.Duration, records int) // Options.OnSync

	asyncMu   sync.Mutex           // guards asyncQ
	asyncQ    []*checkpoint.Record // AppendAsync's queue, taken by the committer
	asyncWake chan struct{}        // cap 1: wakes the committer for asyncQ
	lost      atomic.Bool          // an async batch failed

	// mu guards closed, and orders active.Add against Close's Wait.
	mu     sync.Mutex
	closed bool
	// active counts the calls in progress; Close waits for them. It is
	// a count rather than a read lock so that a Scan callback may call
	// other methods while Close waits.
	active sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// Owned by the committer goroutine (and by Open before it starts).
	nextSeq uint64
	failed  error // first sync failure; poisons later batches
}

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

// enter registers a call in progress, or fails if the journal is closed.
func (j *Journal) enter() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	j.active.Add(1)
	return nil
}

func (j *Journal) leave() { j.active.Done() }

// Close waits for the calls in progress, stops the committer, closes
// badger and releases the lock. Later calls of any method fail with
// ErrClosed; a second Close returns nil.
func (j *Journal) Close() error {
	first := false
	j.closeOnce.Do(func() {
		first = true
		j.mu.Lock()
		j.closed = true
		j.mu.Unlock()
		j.active.Wait()
		close(j.stop)
		<-j.committerDone
		if err := j.db.Close(); err != nil {
			j.closeErr = fmt.Errorf("journal %s: close: %w", j.dir, withErrno(err))
		}
		// Closing the file releases the flock.
		if err := j.lock.Close(); err != nil && j.closeErr == nil {
			j.closeErr = fmt.Errorf("journal %s: release lock: %w", j.dir, err)
		}
	})
	if !first {
		return nil
	}
	return j.closeErr
}

// Dir returns the journal directory.
func (j *Journal) Dir() string { return j.dir }

// Backing returns the absolute BACKING path the journal belongs to.
func (j *Journal) Backing() string { return j.backing }

// Syncs reports how many device syncs the journal has done since Open.
func (j *Journal) Syncs() uint64 { return j.syncs.Load() }

// sync is the one place that calls db.Sync, so that Syncs counts them all
// and OnSync sees them all. records is how many records the sync makes
// durable (0 for metadata and state only).
func (j *Journal) sync(records int) error {
	j.syncs.Add(1)
	start := time.Now()
	err := j.db.Sync()
	if j.onSync != nil {
		// On the committer, after the sync: the hook delays the next
		// batch by its own cost, never a waiter of this one.
		j.onSync(time.Since(start), records)
	}
	if err != nil {
		return fmt.Errorf("sync: %w", withErrno(err))
	}
	return nil
}

// checkSpace fails with ENOSPC when a write could meet a full file system
// (see "Free space and SIGBUS" in the package doc).
func (j *Journal) checkSpace() error {
	if j.reserve < 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(j.dir, &st); err != nil {
		return fmt.Errorf("journal %s: statfs: %w", j.dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < j.reserve {
		return fmt.Errorf("journal %s: %d bytes free, below the reserve of %d: %w",
			j.dir, free, j.reserve, syscall.ENOSPC)
	}
	return nil
}

// errnoError keeps an error's message and adds the errno that badger had
// flattened into it.
type errnoError struct {
	err   error
	errno syscall.Errno
}

func (e *errnoError) Error() string   { return e.err.Error() }
func (e *errnoError) Unwrap() []error { return []error{e.err, e.errno} }

// recoverableErrnos are the errnos that callers act on (a full or failing
// device); badger's messages contain their strerror text.
var recoverableErrnos = []syscall.Errno{
	syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, syscall.EFBIG,
	syscall.ENOMEM, syscall.EACCES, syscall.EPERM, syscall.EMFILE, syscall.ENFILE,
}

// withErrno makes errors.Is(err, errno) work on an error from badger,
// which formats the errors of its file operations with %v (see y.Wrap).
func withErrno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return err
	}
	msg := err.Error()
	for _, e := range recoverableErrnos {
		if strings.Contains(msg, e.Error()) {
			return &errnoError{err: err, errno: e}
		}
	}
	return err
}

// badgerLogger forwards badger's warnings and errors to slog and drops
// its informational chatter (every flush and compaction).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
