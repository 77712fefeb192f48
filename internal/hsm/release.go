package hsm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/internal/tier"
)

// Release frees the local blocks of an archived, clean file that no one
// has open. Its size, inode, links, xattrs, mode, owner and times stay.
// Releasing a released file frees its blocks again (a crash or a failed
// punch may have left some).
//
// The tier object is checked to exist with the archived size first; the
// archive's checksum was verified when it committed. A release writes one
// record, which is its begin and its commit at once: "released" is
// durable before the first block is freed. Whatever share of the blocks
// a crash leaves freed (none, some, all), the file is released and its
// next open restores it from the verified archive: writing the content
// over blocks that were not freed yields the same bytes. So the punch
// needs no sync, and a release costs one journal sync, which concurrent
// releases share (group commit).
func (m *Manager) Release(ctx context.Context, t Target) error {
	id, e, err := m.find(t)
	if err != nil {
		return err
	}
	if e == nil {
		return ErrNotArchived
	}
	e.mu.Lock()
	f := e.f
	e.mu.Unlock()
	if f.Flags&Archived == 0 {
		return ErrNotArchived
	}
	tr, err := m.tier(ctx, f.Tier)
	if err != nil {
		return err
	}
	// The tier is asked before e.mu is taken: the opens of the file (and
	// status, which counts every entry) must not wait for it.
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = checkObject(cctx, tr, &f)
	cancel()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f.Object != f.Object || e.f.Tier != f.Tier {
		return fmt.Errorf("%w: archived again meanwhile", ErrBusy)
	}
	if err != nil {
		if errors.Is(err, ErrLost) {
			e.f.Flags |= Lost
			m.save(e)
		}
		return err
	}
	if err := m.canRelease(e, id, t); err != nil {
		return err
	}
	start := time.Now()
	if e.f.Flags&Released == 0 {
		e.f.Flags |= Released
		if err := m.save(e); err != nil {
			e.f.Flags &^= Released
			m.record(OpRelease, e.f.Tier, err, start, 0)
			return err
		}
	}
	err = punch(t.Fd, id)
	m.record(OpRelease, e.f.Tier, err, start, id.size)
	return err
}

// canRelease checks the rules of a release; the caller holds e.mu.
func (m *Manager) canRelease(e *entry, id identity, t Target) error {
	f := &e.f
	switch {
	case f.Pending != nil || e.restoring != nil || e.truncating != nil:
		return ErrBusy
	case f.Flags&Archived == 0:
		return ErrNotArchived
	case f.Flags&Dirty != 0:
		return ErrDirty
	case f.Flags&Lost != 0:
		return ErrLost
	case f.Flags&NoRelease != 0:
		return ErrRefused
	case !id.same(f):
		// Changed around the mount: the archive is not its content.
		f.Flags |= Dirty
		if err := m.save(e); err != nil {
			return err
		}
		return ErrDirty
	}
	if opens, _ := t.Busy(); opens > 0 {
		return fmt.Errorf("%w: open", ErrBusy)
	}
	return nil
}

// checkObject checks that f's object is in its tier with f's size.
func checkObject(ctx context.Context, tr tier.Tier, f *File) error {
	r, size, err := tr.Open(ctx, f.Object)
	if errors.Is(err, tier.ErrNotFound) {
		return fmt.Errorf("%w: object %s is missing", ErrLost, f.Object)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTier, err)
	}
	r.Close()
	if size != f.Size {
		return fmt.Errorf("%w: object %s holds %d bytes, not %d", ErrLost, f.Object, size, f.Size)
	}
	return nil
}

// punch frees every block of the file, keeping its size and times.
func punch(fd int, id identity) error {
	rw, done, err := writable(fd)
	if err != nil {
		return err
	}
	defer done()
	if id.size > 0 {
		if err := unix.Fallocate(rw, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, id.size); err != nil {
			return fmt.Errorf("free the blocks: %w", err)
		}
	}
	return keepTimes(rw, id.atime, id.mtime)
}

// Remove drops the file's tier copy; only a resident file's. The begin
// record is durable before the object is deleted; recovery finishes a
// pending remove.
func (m *Manager) Remove(ctx context.Context, t Target) error {
	_, e, err := m.find(t)
	if err != nil {
		return err
	}
	if e == nil {
		return nil
	}
	e.mu.Lock()
	f := e.f
	e.mu.Unlock()
	if f.Flags&Archived == 0 {
		return nil
	}
	tr, err := m.tier(ctx, f.Tier)
	if err != nil {
		return err
	}
	e.mu.Lock()
	switch {
	case e.f.Pending != nil || e.restoring != nil || e.truncating != nil:
		e.mu.Unlock()
		return ErrBusy
	case e.f.Flags&Released != 0:
		e.mu.Unlock()
		return ErrReleased
	case e.f.Object != f.Object:
		e.mu.Unlock()
		return fmt.Errorf("%w: archived again meanwhile", ErrBusy)
	}
	e.f.Pending = &Pending{Op: OpRemove}
	if err := m.save(e); err != nil {
		e.f.Pending = nil
		e.mu.Unlock()
		return err
	}
	e.mu.Unlock()
	// The object is deleted without e.mu (the pending remove keeps the
	// other transitions off the file meanwhile).
	start := time.Now()
	err = tr.Remove(ctx, f.Object)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.f.Pending = nil
	if err != nil {
		m.save(e)
		m.record(OpRemove, f.Tier, err, start, 0)
		return fmt.Errorf("%w: %w", ErrTier, err)
	}
	unarchive(&e.f)
	err = m.save(e)
	m.record(OpRemove, f.Tier, err, start, 0)
	return err
}

// unarchive forgets f's archive.
func unarchive(f *File) {
	f.Flags &^= Archived | Dirty | Lost | Released
	f.Tier, f.Object, f.Size, f.Mtime, f.Sum, f.ArchivedAt, f.Pending = 0, "", 0, 0, "", 0, nil
}

// Mark sets or clears a user's mark (norelease, noarchive).
func (m *Manager) Mark(t Target, flag Flags, set bool) error {
	id, err := identify(t.Fd)
	if err != nil {
		return err
	}
	if !id.regular {
		return ErrNotRegular
	}
	e, err := m.entryFor(id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.f.Flags
	if set {
		e.f.Flags |= flag
	} else {
		e.f.Flags &^= flag
	}
	if e.f.Flags == was {
		return nil
	}
	if err := m.save(e); err != nil {
		e.f.Flags = was
		return err
	}
	return nil
}

// State returns the file's HSM state (a zero File with Ino set for a file
// that is only "exists").
func (m *Manager) State(t Target) (File, error) {
	id, e, err := m.find(t)
	if err != nil {
		return File{}, err
	}
	if e == nil {
		return File{Ino: id.ino, Btime: id.btime}, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.f
	f.OpenedAt = e.opened.Load()
	if f.Pending != nil || e.restoring != nil {
		f.Moved = e.moved.Load()
		if e.restoring != nil && f.Pending == nil {
			f.Pending = &Pending{Op: OpRestore}
		}
	}
	if f.Flags&(Archived|Dirty) == Archived && !id.same(&f) && f.Flags&Released == 0 {
		f.Flags |= Dirty // changed around the mount; saved at the next release
	}
	return f, nil
}
