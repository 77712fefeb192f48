package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

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
