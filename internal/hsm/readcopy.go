package hsm

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/internal/tier"
)

// ReadCopy serves hsmfs's own consumers (hsmfs sync, follow) without a
// recall storm: for a released file it fetches the archived content into
// an unnamed temporary file, verified, and returns its fd, which the
// caller reads and closes; the file stays released. ok is false for a
// file that is not released, which the caller opens as usual.
func (m *Manager) ReadCopy(ctx context.Context, t Target) (fd int, ok bool, err error) {
	if !m.Tracking() {
		return -1, false, nil
	}
	id, err := identify(t.Fd)
	if err != nil || !id.regular {
		return -1, false, err
	}
	e := m.lookup(id)
	if e == nil {
		return -1, false, nil
	}
	e.mu.Lock()
	f := e.f
	e.mu.Unlock()
	if f.Flags&Released == 0 {
		return -1, false, nil
	}
	if f.Flags&Lost != 0 {
		return -1, true, ErrLost
	}
	ctx, cancel := context.WithTimeout(ctx, m.opt.RestoreTimeout)
	defer cancel()
	tmp, err := unix.Open(os.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, true, fmt.Errorf("a temporary file for a released file's content: %w", err)
	}
	start := time.Now()
	err = m.copyIn(ctx, &f, tmp, nil)
	m.record(OpRead, f.Tier, err, start, f.Size)
	if err != nil {
		unix.Close(tmp)
		return -1, true, err
	}
	return tmp, true, nil
}

// copyIn writes f's archived content into fd from offset 0, checking its
// size and checksum as a restore does.
func (m *Manager) copyIn(ctx context.Context, f *File, fd int, moved *atomic.Int64) error {
	tr, err := m.tier(ctx, f.Tier)
	if err != nil {
		return err
	}
	r, size, err := tr.Open(ctx, f.Object)
	if errors.Is(err, tier.ErrNotFound) {
		return fmt.Errorf("%w: object %s is missing", ErrLost, f.Object)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTier, err)
	}
	defer r.Close()
	if size != f.Size {
		return fmt.Errorf("%w: object %s holds %d bytes, not %d", ErrLost, f.Object, size, f.Size)
	}
	h := crc32.New(castagnoli)
	buf := getBuf()
	defer putBuf(buf)
	n, err := io.CopyBuffer(io.MultiWriter(&fdWriter{fd: fd, moved: moved}, h), io.LimitReader(r, size+1), buf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTier, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.Sum {
		return fmt.Errorf("%w: object %s does not hold what was archived", ErrLost, f.Object)
	}
	return nil
}
