package hsm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Target is one file of BACKING that a transition or an open acts on, as
// the FUSE side found it.
type Target struct {
	// Fd is an open fd of the file in BACKING, in any access mode, valid
	// for the call. The manager stats it to know the file, and reopens
	// it (through /proc/self/fd) for what it writes.
	Fd int
	// Busy reports the mount's open handles of the file: all of them,
	// and those open for writing. An open is counted before it asks the
	// manager (Opening), so a release that sees none cannot race one.
	Busy func() (opens, writers int32)
}

// identity is who a file is: its inode and birth time, and the version
// facts that say whether its content may have changed.
type identity struct {
	ino     uint64
	btime   int64
	size    int64
	mtime   int64
	atime   unix.Timespec
	mtimeTS unix.Timespec
	regular bool
}

// identify statx's fd.
func identify(fd int) (identity, error) {
	var st unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT,
		unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st)
	if err != nil {
		return identity{}, fmt.Errorf("statx: %w", err)
	}
	id := identity{
		ino:     st.Ino,
		size:    int64(st.Size),
		mtime:   st.Mtime.Sec*1e9 + int64(st.Mtime.Nsec),
		atime:   unix.Timespec{Sec: st.Atime.Sec, Nsec: int64(st.Atime.Nsec)},
		mtimeTS: unix.Timespec{Sec: st.Mtime.Sec, Nsec: int64(st.Mtime.Nsec)},
		regular: st.Mode&unix.S_IFMT == unix.S_IFREG,
	}
	if st.Mask&unix.STATX_BTIME != 0 {
		id.btime = st.Btime.Sec*1e9 + int64(st.Btime.Nsec)
	}
	return id, nil
}

// same reports whether the file still holds the version that f archived.
func (id identity) same(f *File) bool { return id.size == f.Size && id.mtime == f.Mtime }

// reopen opens the file of fd again for writing, through /proc: the
// manager's own fd, which outlives the caller's.
func reopen(fd int) (int, error) {
	rw, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen for writing: %w", err)
	}
	return rw, nil
}

// keepTimes puts back the atime and mtime that id saw: a release and a
// restore write blocks, but are not modifications of the content. The
// ctime moves, which nothing can prevent.
func keepTimes(fd int, id identity) error {
	ts := []unix.Timespec{id.atime, id.mtimeTS}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0); err != nil {
		return fmt.Errorf("keep times: %w", err)
	}
	return nil
}
