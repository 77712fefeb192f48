package checkpoint

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// PathFunc returns the current path of an open file, relative to the
// mount root, and false if the file has no name any more (unlinked).
type PathFunc func() (path string, ok bool)

// Handle is a regular file open for writing. The contract counts it as a
// modification for as long as it stays open: its intent is recorded at
// open, and every query re-records it in the period it starts, so writes
// through it (including mmap and kernel passthrough writes, which hsmfs
// never sees) are always covered by a durable intent of the current
// period. The completions are recorded at Release.
type Handle struct {
	t    *Tracker
	path PathFunc
	ino  uint64

	// period is the latest period in which the handle holds an intent;
	// Touch compares it with the current period without locking.
	period atomic.Uint64

	mu       sync.Mutex // guards entries, recPath and released
	entries  []*sharedIntent
	recPath  string // the path of its latest record
	released bool
}

// OpenWrite records that a file is being opened for writing (op write,
// plus extra, such as create or truncate, all in one sync) and returns
// once that is durable.
func (t *Tracker) OpenWrite(path PathFunc, ino uint64, extra ...Op) (*Handle, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	h := &Handle{t: t, path: path, ino: ino}
	p := t.ps.enter()
	defer t.ps.exit(p)
	if err := h.record(p, extra...); err != nil {
		h.Release()
		return nil, err
	}
	// Registered before the period is left, so that a query that drains
	// p finds the handle and re-records it.
	t.handlesMu.Lock()
	t.handles[h] = struct{}{}
	t.handlesMu.Unlock()
	return h, nil
}

func (h *Handle) record(p uint64, extra ...Op) error {
	path, ok := h.path()
	if !ok {
		// No name: nothing that rsync could copy can change. The unlink
		// that removed the name was recorded.
		h.period.Store(p)
		return nil
	}
	ins := []Intent{{Op: OpWrite, Ino: h.ino, Path: path}}
	for _, op := range extra {
		ins = append(ins, Intent{Op: op, Ino: h.ino, Path: path})
	}
	es, err := h.t.acquire(p, ins...)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.entries = append(h.entries, es...)
	h.recPath = path
	h.mu.Unlock()
	h.period.Store(p)
	return nil
}

// Touch makes sure the handle holds an intent in the current period. It is
// called on every write through the handle; once the handle is recorded in
// the period it is one atomic load.
func (h *Handle) Touch() error {
	if h.period.Load() == h.t.ps.cur.Load() {
		return nil
	}
	p := h.t.ps.enter()
	defer h.t.ps.exit(p)
	if h.period.Load() == p {
		return nil
	}
	return h.record(p)
}

// Release records the completion of everything the handle held.
func (h *Handle) Release() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	es := h.entries
	h.entries = nil
	h.mu.Unlock()
	h.t.handlesMu.Lock()
	delete(h.t.handles, h)
	h.t.handlesMu.Unlock()
	for _, e := range es {
		h.t.release(e)
	}
}

// rerecordHandles gives every file open for writing an intent in P, in
// one batch (one sync), and records again a file whose path changed since
// its latest record (a rename of a directory above it, begun in the
// period that just drained, may have moved it after it was opened in P).
// Caller holds qmu, P is current.
func (t *Tracker) rerecordHandles(P uint64) error {
	if fn := t.settlePaths.Load(); fn != nil {
		(*fn)()
	}
	t.handlesMu.Lock()
	hs := make([]*Handle, 0, len(t.handles))
	for h := range t.handles {
		hs = append(hs, h)
	}
	t.handlesMu.Unlock()
	var ins []Intent
	var owners []*Handle
	for _, h := range hs {
		path, ok := h.path()
		if !ok {
			continue
		}
		h.mu.Lock()
		moved := path != h.recPath
		h.mu.Unlock()
		if h.period.Load() < P || moved {
			ins = append(ins, Intent{Op: OpWrite, Ino: h.ino, Path: path})
			owners = append(owners, h)
		}
	}
	if len(ins) == 0 {
		return nil
	}
	es, err := t.acquire(P, ins...)
	if err != nil {
		return fmt.Errorf("re-record %d open files: %w", len(ins), err)
	}
	for i, h := range owners {
		h.mu.Lock()
		if h.released {
			h.mu.Unlock()
			t.release(es[i])
			continue
		}
		h.entries = append(h.entries, es[i])
		h.recPath = ins[i].Path
		h.mu.Unlock()
		h.period.Store(P)
	}
	return nil
}

// SetPathSettler gives the tracker fn, which a query calls after its
// period drained and before it takes the paths of the files open for
// writing: the caller's tree may apply a modification after the
// modification's token ended (fs: go-fuse moves a renamed inode only
// after Rename returns), and fn waits until it has. fn runs under qmu
// and must not call the Tracker.
func (t *Tracker) SetPathSettler(fn func()) { t.settlePaths.Store(&fn) }
