package hsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Archive copies the file's content to tier tierID (0: the default
// tier), verified, and commits it: the file becomes archived and not
// dirty. An archived, clean file is left as it is.
//
// The begin record (Pending, with the new object's name) is durable
// before the copy starts, so a crash leaves an object that recovery
// collects. The commit requires that no open for writing and no
// truncation happened since the copy began (gen) and that size and
// mtime are unchanged: otherwise the object is collected and ErrChanged
// returned.
func (m *Manager) Archive(ctx context.Context, t Target, tierID uint32) (err error) {
	id, err := identify(t.Fd)
	if err != nil {
		return err
	}
	if !id.regular {
		return ErrNotRegular
	}
	if tierID == 0 {
		var ok bool
		if tierID, ok = m.DefaultTier(); !ok {
			return fmt.Errorf("%w: add one with hsmfs tier add", ErrNoTier)
		}
	}
	tr, err := m.tier(ctx, tierID)
	if err != nil {
		return err
	}
	e, err := m.entryFor(id)
	if err != nil {
		return err
	}
	object, gen, err := m.beginArchive(e, id, t, tierID)
	if err != nil || object == "" {
		return err
	}
	start := time.Now()
	defer func() { m.record(OpArchive, tierID, err, start, id.size) }()
	e.moved.Store(0)
	sum, err := copyOut(ctx, tr, object, t.Fd, id.size, &e.moved)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.f.Pending = nil
	if err == nil {
		err = m.checkUnchanged(e, t, id, gen)
	}
	if err != nil {
		// Abort: the orphan row first, so that whatever prefix of the
		// rows survives a crash, the object is collected.
		if serr := m.store.PutRows([]Row{orphanRow(tierID, object), fileRow(&e.f)}); serr != nil {
			m.log.Warn("hsm: could not record an aborted archive", "ino", id.ino, "err", serr)
		}
		m.collectOrphans()
		return err
	}
	var extra []Row
	if e.f.Object != "" && (e.f.Object != object || e.f.Tier != tierID) {
		extra = append(extra, orphanRow(e.f.Tier, e.f.Object))
	}
	e.f.Flags = e.f.Flags&^(Dirty|Lost|Released) | Archived
	e.f.Tier, e.f.Object, e.f.Size, e.f.Mtime, e.f.Sum = tierID, object, id.size, id.mtime, sum
	e.f.ArchivedAt = time.Now().Unix()
	if err := m.save(e, extra...); err != nil {
		return err
	}
	m.collectOrphans()
	return nil
}

// beginArchive checks that the file can be archived and makes the begin
// record durable. It returns the new object's name ("" when there is
// nothing to do) and the write generation that the commit checks.
func (m *Manager) beginArchive(e *entry, id identity, t Target, tierID uint32) (string, uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := &e.f
	switch {
	case f.Pending != nil || e.restoring != nil:
		return "", 0, ErrBusy
	case f.Flags&NoArchive != 0:
		return "", 0, ErrRefused
	case f.Flags&Released != 0:
		return "", 0, nil // archived and clean, or it could not be released
	case f.Flags&Archived != 0 && f.Flags&Dirty == 0 && id.same(f) && f.Tier == tierID:
		return "", 0, nil
	}
	if _, w := t.Busy(); w > 0 {
		return "", 0, fmt.Errorf("%w: open for writing", ErrBusy)
	}
	object, err := objectName(id)
	if err != nil {
		return "", 0, err
	}
	if f.Handle == nil {
		f.Handle = handleOf(t.Fd)
	}
	f.Pending = &Pending{Op: OpArchive, Tier: tierID, Object: object}
	if err := m.save(e); err != nil {
		f.Pending = nil
		return "", 0, err
	}
	return object, e.gen, nil
}

// checkUnchanged: nothing opened the file for writing or truncated it
// during the copy, and it still holds the version copied. The caller
// holds e.mu, which every open for writing takes (Opening).
func (m *Manager) checkUnchanged(e *entry, t Target, was identity, gen uint64) error {
	now, err := identify(t.Fd)
	if err != nil {
		return err
	}
	if _, w := t.Busy(); w > 0 || e.gen != gen || now.size != was.size || now.mtime != was.mtime {
		return ErrChanged
	}
	return nil
}

// objectName names a new tier object: the inode and birth time say whose
// it is (for a person looking at the tier), the random part makes every
// archive's object new, so that a committed object is never overwritten.
func objectName(id identity) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%016x-%x-%s", id.ino, id.btime, hex.EncodeToString(r[:])), nil
}

// copyOut copies size bytes of fd to object and returns their CRC-32C.
// The tier's Put returns only once the object is durable. The file is
// read and hashed ahead of the tier's writes (readAhead), so that the
// hash costs no time of its own: an archive runs at the tier's speed.
func copyOut(ctx context.Context, tr interface {
	Put(context.Context, string, io.Reader, int64) error
}, object string, fd int, size int64, moved *atomic.Int64) (string, error) {
	ra := newReadAhead(fd, size, moved)
	defer ra.stop()
	if err := tr.Put(ctx, object, ra, size); err != nil {
		return "", fmt.Errorf("%w: %w", ErrTier, err)
	}
	sum, err := ra.sum()
	if err != nil {
		return "", err
	}
	return sum, nil
}

// readAhead reads a file in chunks and hashes them on its own goroutine,
// a few chunks ahead of its reader.
type readAhead struct {
	chunks chan []byte
	free   chan []byte
	done   chan struct{}
	cur    []byte // the chunk being read, and what is left of it
	buf    []byte // cur's whole buffer, to give back
	hash   string
	err    error // set before chunks is closed
}

const aheadChunk = 1 << 20

func newReadAhead(fd int, size int64, moved *atomic.Int64) *readAhead {
	ra := &readAhead{chunks: make(chan []byte, 4), free: make(chan []byte, 6), done: make(chan struct{})}
	// A small file needs one buffer, a big one six (pooled: an archive of
	// many small files must not allocate megabytes each).
	for range min(6, 1+(size+aheadChunk-1)/aheadChunk) {
		ra.free <- getBuf()
	}
	go func() {
		defer close(ra.chunks)
		h := crc32.New(castagnoli)
		for off := int64(0); off < size; {
			var b []byte
			select {
			case b = <-ra.free:
			case <-ra.done:
				return
			}
			n, err := fdReader(fd).ReadAt(b[:min(int64(len(b)), size-off)], off)
			if err != nil && !(err == io.EOF && n > 0) {
				ra.err = fmt.Errorf("read the file: %w", err)
				return
			}
			h.Write(b[:n])
			off += int64(n)
			if moved != nil {
				moved.Store(off)
			}
			select {
			case ra.chunks <- b[:n]:
			case <-ra.done:
				return
			}
		}
		ra.hash = hex.EncodeToString(h.Sum(nil))
	}()
	return ra
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.buf != nil {
			ra.free <- ra.buf[:cap(ra.buf)]
			ra.buf = nil
		}
		b, ok := <-ra.chunks
		if !ok {
			if ra.err != nil {
				return 0, ra.err
			}
			return 0, io.EOF
		}
		ra.cur, ra.buf = b, b
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// sum is the hash of everything read, once the reader has read it all.
func (ra *readAhead) sum() (string, error) {
	for b := range ra.chunks { // what the tier did not read: nothing, normally
		ra.free <- b[:cap(b)]
	}
	if ra.err != nil {
		return "", ra.err
	}
	if ra.hash == "" {
		return "", errors.New("archive: the file was not read to its end")
	}
	return ra.hash, nil
}

// stop ends the reading goroutine (if the tier gave up early) and gives
// the buffers back.
func (ra *readAhead) stop() {
	close(ra.done)
	for b := range ra.chunks {
		putBuf(b)
	}
	if ra.buf != nil {
		putBuf(ra.buf)
	}
	for {
		select {
		case b := <-ra.free:
			putBuf(b)
		default:
			return
		}
	}
}

// bufs are the 1 MiB buffers of copies to and from tiers.
var bufs = sync.Pool{New: func() any { return new([aheadChunk]byte) }}

func getBuf() []byte  { return bufs.Get().(*[aheadChunk]byte)[:] }
func putBuf(b []byte) { bufs.Put((*[aheadChunk]byte)(b[:aheadChunk])) }

// fdReader reads an fd that it does not own with pread (an os.File
// would close it when collected).
type fdReader int

func (fd fdReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Pread(int(fd), p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}
