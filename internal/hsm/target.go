package hsm

import (
	"fmt"
	"unsafe"

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
	fd      int // the fd it was taken from, valid while the caller's is
	dev     uint64
	ino     uint64
	btime   int64
	size    int64
	mtime   int64
	atime   unix.Timespec
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
		fd:      fd,
		dev:     unix.Mkdev(st.Dev_major, st.Dev_minor),
		ino:     st.Ino,
		size:    int64(st.Size),
		mtime:   st.Mtime.Sec*1e9 + int64(st.Mtime.Nsec),
		atime:   unix.Timespec{Sec: st.Atime.Sec, Nsec: int64(st.Atime.Nsec)},
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

// writable returns fd itself if it is open for writing, or a new fd of
// its file that is (close it with done).
func writable(fd int) (rw int, done func(), err error) {
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil && fl&unix.O_ACCMODE == unix.O_RDWR {
		return fd, func() {}, nil
	}
	if rw, err = reopen(fd); err != nil {
		return -1, nil, err
	}
	return rw, func() { unix.Close(rw) }, nil
}

// keepTimes puts back atime and the mtime of the content (ns): a release
// and a restore write blocks, but are not modifications of the content.
// The ctime moves, which nothing can prevent.
func keepTimes(fd int, atime unix.Timespec, mtime int64) error {
	ts := [2]unix.Timespec{atime, unix.NsecToTimespec(mtime)}
	// futimens(3): utimensat with no path acts on fd itself.
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("keep times: %w", errno)
	}
	return nil
}
