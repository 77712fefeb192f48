package hsm

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// restore is one fetch of a released file, shared by every open that
// waits for it.
type restore struct {
	done chan struct{}
	err  error // set before done is closed
}

// Opening is called by every open of a regular file through the mount,
// after the open was counted in Target.Busy and before it reaches the
// file. A released file is restored first, unless trunc says that its
// content is about to be thrown away. An open for writing (or a
// truncation) of an archived file makes it dirty, durably, before it
// returns, so before the file can change.
//
// A truncating open (trunc) waits for a restore in flight, which would
// otherwise write the old content over what follows the truncation. Of a
// released file it records a pending truncation (durably), and the
// caller must call Truncated once its truncation is done or failed;
// until then no restore of the file starts.
//
// If ctx ends while a restore runs, Opening returns ctx's error; the
// restore goes on, so that the next open does not start from zero.
func (m *Manager) Opening(ctx context.Context, t Target, write, trunc bool) error {
	if m.tracked.Load() == 0 {
		return nil // nothing archived: the fast path of every open
	}
	id, err := identify(t.Fd)
	if err != nil || !id.regular {
		return err
	}
	e := m.lookup(id)
	if e == nil {
		return nil
	}
	e.opened.Store(time.Now().UnixNano())
	if !trunc {
		if err := m.restoreAndWait(ctx, e, t.Fd, id); err != nil {
			return err
		}
	}
	if !write {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if trunc {
		if err := m.waitQuiet(ctx, e); err != nil {
			return err
		}
	}
	e.gen++
	was := e.f
	if e.f.Flags&Archived != 0 {
		e.f.Flags |= Dirty
	}
	if trunc && e.f.Flags&Released != 0 {
		e.f.Pending = &Pending{Op: OpTruncate}
	}
	if e.f.Flags == was.Flags && e.f.Pending == was.Pending {
		return nil
	}
	if err := m.save(e); err != nil {
		e.f = was
		return err
	}
	if e.f.Pending != nil {
		e.truncating = make(chan struct{})
	}
	return nil
}

// waitQuiet waits, holding e.mu when it returns, until no restore and no
// truncation of the file is in flight.
func (m *Manager) waitQuiet(ctx context.Context, e *entry) error {
	for {
		var wait chan struct{}
		switch {
		case e.restoring != nil:
			wait = e.restoring.done
		case e.truncating != nil:
			wait = e.truncating
		default:
			return nil
		}
		e.mu.Unlock()
		select {
		case <-wait:
			e.mu.Lock()
		case <-ctx.Done():
			e.mu.Lock()
			return ctx.Err()
		}
	}
}

// Truncated is called after the truncation of a file that Opening was
// told of (trunc), with the truncation's error. For a released file it
// syncs the file, then commits "resident" (the file holds no released
// content any more). Until that commit a crash leaves the truncation
// pending, and the next look at the file settles it by its size
// (settleTruncate). A failed commit is returned: the caller fails the
// open.
func (m *Manager) Truncated(t Target, truncErr error) error {
	id, err := identify(t.Fd)
	if err != nil {
		return err
	}
	m.mu.Lock()
	e := m.files[id.ino]
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.truncating == nil || e.f.Btime != id.btime {
		return nil
	}
	defer func() { close(e.truncating); e.truncating = nil }()
	if truncErr == nil {
		if err := unix.Fdatasync(t.Fd); err != nil {
			return fmt.Errorf("truncate: sync: %w", err) // pending: settled by size
		}
		e.f.Flags &^= Released
	}
	e.f.Pending = nil
	if err := m.save(e); err != nil {
		// What the journal holds (pending) is settled by the file's size.
		e.f.Pending = &Pending{Op: OpTruncate}
		e.f.Flags |= Released
		return err
	}
	return nil
}

// settleTruncate ends a truncation that a crash (or a failed commit) left
// pending; the caller holds e.mu. The file's size says whether it
// happened: a released file keeps its archived size until truncated.
func (m *Manager) settleTruncate(e *entry, id identity) {
	if e.f.Pending == nil || e.f.Pending.Op != OpTruncate || e.truncating != nil {
		return
	}
	was := e.f
	if id.size == 0 || id.size != e.f.Size {
		e.f.Flags &^= Released // truncated (and maybe written since)
	}
	e.f.Pending = nil
	if err := m.save(e); err != nil {
		e.f = was
		m.log.Warn("hsm: could not settle a pending truncation", "ino", id.ino, "err", err)
	}
}

// Restore brings a released file's content back (hsm restore).
func (m *Manager) Restore(ctx context.Context, t Target) error {
	id, e, err := m.find(t)
	if err != nil {
		return err
	}
	if e == nil {
		return nil
	}
	return m.restoreAndWait(ctx, e, t.Fd, id)
}

// restoreAndWait starts the restore of a released file if none runs, and
// waits for it or for ctx.
func (m *Manager) restoreAndWait(ctx context.Context, e *entry, fd int, id identity) error {
	e.mu.Lock()
	if e.truncating != nil {
		// A truncation in flight: the file is emptied, or not, once it
		// ends; only then is there anything to restore.
		for e.truncating != nil {
			w := e.truncating
			e.mu.Unlock()
			select {
			case <-w:
			case <-ctx.Done():
				return ctx.Err()
			}
			e.mu.Lock()
		}
		if now, err := identify(fd); err == nil {
			id = now
		}
	}
	m.settleTruncate(e, id)
	if e.f.Flags&Released == 0 {
		e.mu.Unlock()
		return nil
	}
	r := e.restoring
	if r == nil {
		var err error
		if r, err = m.startRestore(e, fd, id); err != nil {
			e.mu.Unlock()
			return err
		}
	}
	e.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startRestore records the begin record and starts the fetch; the caller
// holds e.mu. The fetch runs on its own fd and context, so that it
// outlives the open that started it.
func (m *Manager) startRestore(e *entry, fd int, id identity) (*restore, error) {
	if e.f.Pending != nil {
		return nil, ErrBusy
	}
	if e.f.Flags&Lost != 0 {
		return nil, ErrLost
	}
	rw, err := reopen(fd)
	if err != nil {
		return nil, err
	}
	e.f.Pending = &Pending{Op: OpRestore}
	if err := m.save(e); err != nil {
		e.f.Pending = nil
		unix.Close(rw)
		return nil, err
	}
	r := &restore{done: make(chan struct{})}
	e.restoring = r
	f := e.f
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer unix.Close(rw)
		ctx, cancel := context.WithTimeout(context.Background(), m.opt.RestoreTimeout)
		defer cancel()
		start := time.Now()
		e.moved.Store(0)
		err := m.fetch(ctx, &f, rw, id, &e.moved)
		m.record(OpRestore, f.Tier, err, start, f.Size)
		e.mu.Lock()
		e.f.Pending = nil
		if err == nil {
			e.f.Flags &^= Released
		} else if errors.Is(err, ErrLost) {
			e.f.Flags |= Lost
		}
		if serr := m.save(e); err == nil && serr != nil {
			err = serr
		}
		if err != nil {
			// Released stays: the file is restorable again.
			m.log.Error("hsm: restore failed", "ino", f.Ino, "object", f.Object, "err", err)
			err = fmt.Errorf("restore: %w", err)
		}
		r.err = err
		e.restoring = nil
		e.mu.Unlock()
		close(r.done)
	}()
	return r, nil
}

// fetch writes the object's content into the file in place, checks its
// size and checksum, syncs the file, and puts its times back. Only then
// may the state say resident.
func (m *Manager) fetch(ctx context.Context, f *File, rw int, id identity, moved *atomic.Int64) error {
	if err := m.copyIn(ctx, f, rw, moved); err != nil {
		return err
	}
	// The archived version's mtime: a crash may have kept a punch's
	// mtime and lost the times that the release put back.
	if err := keepTimes(rw, id.atime, f.Mtime); err != nil {
		return err
	}
	if err := unix.Fsync(rw); err != nil {
		return fmt.Errorf("restore: sync: %w", err)
	}
	return nil
}

// fdWriter writes sequentially from offset 0 with pwrite (the fd's own
// offset is not used, so nothing else can move it).
type fdWriter struct {
	fd    int
	off   int64
	moved *atomic.Int64 // if set, follows off
}

func (w *fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Pwrite(w.fd, p[n:], w.off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += k
		w.off += int64(k)
	}
	if w.moved != nil {
		w.moved.Store(w.off)
	}
	return n, nil
}
