package journal

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

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

// DefaultReserveBytes is the free space that writes require when
// Options.ReserveBytes is 0.
const DefaultReserveBytes = 64 << 20
