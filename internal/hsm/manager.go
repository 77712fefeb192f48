package hsm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmfs/hsmfs/internal/tier"
)

// Errors of the transitions; fs turns each into an errno (fs/errno.go).
var (
	ErrNoTier      = errors.New("no such tier")
	ErrTierInUse   = errors.New("the tier holds archived files")
	ErrNotRegular  = errors.New("not a regular file")
	ErrNotArchived = errors.New("not archived")
	ErrDirty       = errors.New("dirty: changed since its archive")
	ErrBusy        = errors.New("open, or a transition is in flight")
	ErrChanged     = errors.New("the file changed during the archive")
	ErrReleased    = errors.New("released: restore it first")
	ErrRefused     = errors.New("refused by its noarchive or norelease mark")
	ErrLost        = errors.New("the tier copy is lost")
	ErrTier        = errors.New("the tier failed")
	ErrOtherFS     = errors.New("on another file system than BACKING's root (a mount inside BACKING)")
)

// Options configure a Manager.
type Options struct {
	Log *slog.Logger
	// RestoreTimeout bounds one restore: a tier that does not answer
	// makes the opens waiting for it fail with EIO (default 5 minutes).
	RestoreTimeout time.Duration
	// OpenTier opens a tier's URL (default tier.Open).
	OpenTier func(ctx context.Context, url string) (tier.Tier, error)
	// Root, if positive, is an fd of BACKING's root, beneath which
	// the sweep at start opens files by handle (sweep.go). Zero means
	// none, as it is never the root's fd in practice.
	Root int
	// Dev is the device of BACKING's root. Only files on it have HSM
	// states: inode numbers, birth times and handles say which file is
	// which only within one file system.
	Dev uint64
}

// Manager is the HSM of one mount.
type Manager struct {
	store Store
	opt   Options
	log   *slog.Logger

	// mu guards tiers and files (the maps; an entry's content is
	// guarded by its own mu). Lock order: Manager.mu, then entry.mu;
	// no code holds an entry's mu while it waits for Manager.mu.
	mu    sync.Mutex
	tiers map[uint32]*tierSlot
	files map[uint64]*entry
	dev   uint64 // Options.Dev
	// tracked is len(files), read without mu by the open fast path.
	tracked atomic.Int64

	stats      stats       // counts of the transitions, for the metrics
	collecting atomic.Bool // an orphan collection is running
	wg         sync.WaitGroup
	closed     chan struct{}
	closeOnce  sync.Once
}

// tierSlot is a configured tier; t is opened on first use.
type tierSlot struct {
	row TierRow
	t   tier.Tier
}

// entry is one tracked file.
type entry struct {
	// mu guards f, gen and restoring. It is held for a transition's
	// checks and commits, and across a release, but not across a copy
	// to or from the tier: restoring and Pending say one is running.
	mu sync.Mutex
	f  File
	// gen counts the file's opens for writing and truncations: an
	// archive commits only if it did not move during the copy.
	gen uint64
	// restoring is the restore in flight, which every open of the file
	// waits for (one fetch for all of them).
	restoring *restore
	// truncating is closed when the truncation in flight (a truncating
	// open of a released file, until Truncated) ends; no restore starts
	// meanwhile.
	truncating chan struct{}
	// opened is when the file was last opened (unix ns; atomic, set by
	// every open without e.mu).
	opened atomic.Int64
	// moved is how far the running archive or restore has come (bytes;
	// atomic), for the progress that hsm state shows.
	moved atomic.Int64
}

// New loads the table, recovers the transitions that a crash left
// pending (load.go) and returns the manager. Orphaned tier objects are
// collected in the background.
func New(store Store, opt Options) (*Manager, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.RestoreTimeout <= 0 {
		opt.RestoreTimeout = 5 * time.Minute
	}
	if opt.OpenTier == nil {
		opt.OpenTier = tier.Open
	}
	m := &Manager{store: store, opt: opt, log: opt.Log, dev: opt.Dev,
		tiers: map[uint32]*tierSlot{}, files: map[uint64]*entry{}, closed: make(chan struct{})}
	if err := m.load(); err != nil {
		return nil, err
	}
	if opt.Root > 0 && m.tracked.Load() > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.sweep(opt.Root)
			m.collectOrphans()
		}()
	} else {
		m.collectOrphans()
	}
	return m, nil
}

// Close waits for the restores and collections in flight.
func (m *Manager) Close() {
	m.closeOnce.Do(func() { close(m.closed) })
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.tiers {
		if c, ok := s.t.(interface{ Close() error }); ok {
			c.Close()
		}
	}
}

// AddTier checks that url is reachable and writable, then records tier id.
func (m *Manager) AddTier(ctx context.Context, id uint32, url string) error {
	if id == 0 {
		return fmt.Errorf("%w: tier ids start at 1", ErrNoTier)
	}
	t, err := m.opt.OpenTier(ctx, url)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTier, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.tiers[id]; ok && s.row.URL != url {
		return fmt.Errorf("tier %d is %s already: remove it first", id, s.row.URL)
	}
	row := TierRow{ID: id, URL: url}
	v, _ := json.Marshal(row)
	if err := m.store.PutRows([]Row{{Name: tierRowName(id), Value: v}}); err != nil {
		return err
	}
	m.tiers[id] = &tierSlot{row: row, t: t}
	return nil
}

// RemoveTier forgets tier id; it is refused while a file is archived in it.
func (m *Manager) RemoveTier(id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tiers[id]; !ok {
		return fmt.Errorf("%w: %d", ErrNoTier, id)
	}
	for _, e := range m.files {
		e.mu.Lock()
		uses := e.f.Tier == id && e.f.Flags&Archived != 0 || e.f.Pending != nil && e.f.Pending.Tier == id
		e.mu.Unlock()
		if uses {
			return fmt.Errorf("%w: tier %d (hsm remove them first)", ErrTierInUse, id)
		}
	}
	if err := m.store.PutRows([]Row{{Name: tierRowName(id)}}); err != nil {
		return err
	}
	delete(m.tiers, id)
	return nil
}

// Tiers lists the tiers by id.
func (m *Manager) Tiers() []TierRow {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TierRow, 0, len(m.tiers))
	for _, s := range m.tiers {
		out = append(out, s.row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DefaultTier is the tier an archive goes to when none is named: the
// lowest id.
func (m *Manager) DefaultTier() (uint32, bool) {
	t := m.Tiers()
	if len(t) == 0 {
		return 0, false
	}
	return t[0].ID, true
}

// tier returns tier id, opening it on first use.
func (m *Manager) tier(ctx context.Context, id uint32) (tier.Tier, error) {
	m.mu.Lock()
	s, ok := m.tiers[id]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoTier, id)
	}
	if s.t != nil {
		return s.t, nil
	}
	t, err := m.opt.OpenTier(ctx, s.row.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: tier %d: %w", ErrTier, id, err)
	}
	m.mu.Lock()
	if s.t == nil {
		s.t = t
	}
	t = s.t
	m.mu.Unlock()
	return t, nil
}

// find identifies the file of t and returns its entry (nil: the file has
// no state).
func (m *Manager) find(t Target) (identity, *entry, error) {
	id, err := identify(t.Fd)
	if err != nil {
		return id, nil, err
	}
	return id, m.lookup(id), nil
}

// lookup returns the entry of id, or nil. An entry whose birth time is
// not the file's belongs to a file that is gone (its inode number was
// handed out again): it is dropped, and its tier object collected. A
// truncation that a crash left pending is settled by the file's size.
func (m *Manager) lookup(id identity) *entry {
	if m.tracked.Load() == 0 || id.dev != m.dev {
		return nil
	}
	m.mu.Lock()
	e := m.files[id.ino]
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	stale := e.f.Btime != id.btime
	if !stale && id.btime == 0 && e.f.Handle != nil {
		// No birth times on this file system (ext3, small ext4 inodes,
		// XFS v4): the handle, which holds the inode's generation,
		// tells a file that took a deleted one's inode number.
		stale = !bytes.Equal(handleOf(id.fd), e.f.Handle)
	}
	if !stale {
		m.settleTruncate(e, id)
	}
	e.mu.Unlock()
	if stale {
		m.forget(e)
		return nil
	}
	return e
}

// entryFor returns the entry of id, making one (not yet durable) if there
// is none.
func (m *Manager) entryFor(id identity) (*entry, error) {
	if id.dev != m.dev {
		return nil, ErrOtherFS
	}
	for try := 0; try < 3; try++ {
		if e := m.lookup(id); e != nil {
			return e, nil
		}
		m.mu.Lock()
		if e := m.files[id.ino]; e != nil {
			// Made meanwhile, or a stale one that could not be forgotten.
			m.mu.Unlock()
			continue
		}
		e := &entry{f: File{Ino: id.ino, Btime: id.btime}}
		m.files[id.ino] = e
		m.tracked.Store(int64(len(m.files)))
		m.mu.Unlock()
		return e, nil
	}
	return nil, fmt.Errorf("%w: the state of a file that held its inode number could not be dropped", ErrBusy)
}

// forget drops a stale entry: its row goes, its object is collected. It
// holds Manager.mu throughout, so that no entry for a new file of the
// same inode number can be made (and its row written) before the
// deletion of the old row is durable; and it leaves an entry that a
// transition is using, or that is no longer the map's, alone.
func (m *Manager) forget(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.f
	if m.files[f.Ino] != e || f.Pending != nil || e.restoring != nil || e.truncating != nil {
		return
	}
	rows := []Row{}
	if f.Object != "" {
		rows = append(rows, orphanRow(f.Tier, f.Object))
	}
	rows = append(rows, Row{Name: fileRowName(f.Ino)})
	if err := m.store.PutRows(rows); err != nil {
		m.log.Warn("hsm: could not forget a file that is gone", "ino", f.Ino, "err", err)
		return
	}
	delete(m.files, f.Ino)
	m.tracked.Store(int64(len(m.files)))
	go m.collectOrphans()
}

// save makes e.f durable; the caller holds e.mu. extra rows go after the
// file's row (PutRows keeps their order, and a crash may keep only a
// prefix of them: see doc.go).
func (m *Manager) save(e *entry, extra ...Row) error {
	return m.store.PutRows(append([]Row{fileRow(&e.f)}, extra...))
}

// Counts are the tracked files per state, for status and metrics.
type Counts struct {
	Files map[string]int64 `json:"files"` // state name → files
	Bytes map[string]int64 `json:"bytes"` // state name → bytes (archived sizes)
}

// Count counts the tracked files per state.
func (m *Manager) Count() Counts {
	c := Counts{Files: map[string]int64{}, Bytes: map[string]int64{}}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.files {
		e.mu.Lock()
		for _, n := range e.f.Flags.Names() {
			c.Files[n]++
			c.Bytes[n] += e.f.Size
		}
		if e.f.Pending != nil {
			c.Files["pending_"+string(e.f.Pending.Op)]++
		}
		e.mu.Unlock()
	}
	return c
}

// describe is the one-line state of f, for logs and errors.
func describe(f File) string {
	var b strings.Builder
	b.WriteString(f.Flags.String())
	if f.Flags&Archived != 0 {
		fmt.Fprintf(&b, " tier=%d", f.Tier)
	}
	return b.String()
}

// Tracking reports whether any file has a state (the opens' fast path).
func (m *Manager) Tracking() bool { return m.tracked.Load() > 0 }

// Forget drops the state of a file that has no name left (fs calls it
// after an unlink or a rename removed its last link): its tier object is
// collected.
func (m *Manager) Forget(t Target) {
	if _, e, err := m.find(t); err == nil && e != nil {
		m.forget(e)
	}
}

// Tracks reports whether the file of fd has a state.
func (m *Manager) Tracks(fd int) bool {
	if !m.Tracking() {
		return false
	}
	_, e, err := m.find(Target{Fd: fd})
	return err == nil && e != nil
}
