package hsm

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// A file whose last name is removed through the mount loses its state at
// once (Forget). One removed around the mount, or while a crash stopped
// the daemon between the removal and Forget, leaves a row and an object
// behind: the sweep at mount finds them by the file handles that the
// rows keep, and forgets every file that its handle no longer opens.

// handleOf is the file handle of fd (type, then the handle's bytes), or
// nil where the file system gives none.
func handleOf(fd int) []byte {
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(h.Type())), h.Bytes()...)
}

// exists reports whether handle opens a file beneath mountFd; ok is
// false where that cannot be known (no handle, no permission).
func exists(mountFd int, handle []byte) (exists, ok bool) {
	if len(handle) < 5 {
		return false, false
	}
	h := unix.NewFileHandle(int32(binary.BigEndian.Uint32(handle)), handle[4:])
	fd, err := unix.OpenByHandleAt(mountFd, h, unix.O_PATH|unix.O_CLOEXEC)
	if err == nil {
		unix.Close(fd)
		return true, true
	}
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return false, true
	}
	return false, false
}

// sweep forgets the tracked files that are gone; it runs once, in the
// background, after load.
func (m *Manager) sweep(mountFd int) {
	m.mu.Lock()
	entries := make([]*entry, 0, len(m.files))
	for _, e := range m.files {
		entries = append(entries, e)
	}
	m.mu.Unlock()
	gone := 0
	for _, e := range entries {
		select {
		case <-m.closed:
			return
		default:
		}
		e.mu.Lock()
		h := e.f.Handle
		busy := e.f.Pending != nil || e.restoring != nil
		e.mu.Unlock()
		there, known := exists(mountFd, h)
		if !known && h != nil {
			m.log.Info("hsm: cannot open files by handle here; the states of files deleted around the mount stay", "reason", "no permission or no handles")
			return
		}
		if known && !there && !busy {
			m.forget(e)
			gone++
		}
	}
	if gone > 0 {
		m.log.Info("hsm: forgot files that are gone, and collect their archives", "files", gone)
	}
}
