package fs

import (
	"context"
	"encoding/json"
	"errors"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/internal/backing"

	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// The HSM's side of the mount: every open of a regular file asks the
// manager first (a released file is restored, an archived one opened for
// writing becomes dirty), and the virtual xattrs of hsmctl carry the
// HSM's commands and states. Release and restore are not modifications:
// they take no intent (internal/hsm's doc.go says why that is safe).

// hsmTarget is the node's file, open as fd, for the manager. Busy counts
// the node's handles: every open is counted before it asks the manager.
func (n *Node) hsmTarget(fd int) hsm.Target {
	return hsm.Target{Fd: fd, Busy: func() (int32, int32) { return n.opens.Load(), n.writers.Load() }}
}

// hsmOpening lets the manager restore or dirty the file before the open
// (or the truncation) goes on. While no file has a state, every open
// passes with one atomic load (no Target is built).
func (n *Node) hsmOpening(ctx context.Context, fd int, write, trunc bool) syscall.Errno {
	if n.r.hsm == nil || !n.r.hsm.Tracking() {
		return 0
	}
	return toErrno(n.r.hsm.Opening(ctx, n.hsmTarget(fd), write, trunc))
}

// truncate empties an open file that hsmOpening was told of (trunc);
// the manager hears how it went, and may fail the open (a released file
// whose new state could not be recorded).
func (n *Node) truncate(fd int) syscall.Errno {
	err := unix.Ftruncate(fd, 0)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBADF) {
		// O_RDONLY|O_TRUNC: the fd may not write; the file is the
		// fd's, reached through /proc (the caller's permission to
		// write it was checked with the open).
		err = unix.Truncate(backing.ProcFd(fd), 0)
	}
	// A truncation that Opening recorded keeps its file's state (and so
	// Tracking) until Truncated; without one there is nothing to tell.
	if n.r.hsm != nil && n.r.hsm.Tracking() {
		if herr := n.r.hsm.Truncated(n.hsmTarget(fd), err); err == nil && herr != nil {
			return toErrno(herr)
		}
	}
	return toErrno(err)
}

// hsmSetattrSize: a truncate(2) without an open file goes through the
// manager as an open for writing would; done reports how the truncation
// went, and returns the errno for the caller.
func (n *Node) hsmSetattrSize(ctx context.Context, size uint64) (done func(syscall.Errno) syscall.Errno, errno syscall.Errno) {
	if n.r.hsm == nil || !n.r.hsm.Tracking() {
		return func(e syscall.Errno) syscall.Errno { return e }, 0
	}
	fd, errno := n.openSelf(syscall.O_RDONLY)
	if errno != 0 {
		return nil, errno
	}
	n.opens.Add(1)
	n.writers.Add(1)
	release := func() {
		n.writers.Add(-1)
		n.opens.Add(-1)
		unix.Close(fd)
	}
	if errno := n.hsmOpening(ctx, fd, true, size == 0); errno != 0 {
		release()
		return nil, errno
	}
	return func(e syscall.Errno) syscall.Errno {
		defer release()
		if size != 0 {
			return e
		}
		var truncErr error
		if e != 0 {
			truncErr = e
		}
		if herr := n.r.hsm.Truncated(n.hsmTarget(fd), truncErr); e == 0 && herr != nil {
			return toErrno(herr)
		}
		return e
	}, 0
}

// hsmCommand runs the command written to hsmctl.XattrCommand.
func (n *Node) hsmCommand(ctx context.Context, value []byte) syscall.Errno {
	if n.r.hsm == nil {
		return syscall.ENOTSUP
	}
	cmd, err := hsmctl.ParseHSMCommand(string(value))
	if err != nil {
		n.r.ctl.setErr("%v", err)
		return syscall.EINVAL
	}
	// A release frees blocks through this fd if it may write (one open
	// fewer); read-only is enough for the rest, and a release reopens
	// if it must (a file that runs refuses O_RDWR: ETXTBSY).
	errno := syscall.EBADF
	var fd int
	if cmd.Verb == hsmctl.HSMRelease {
		fd, errno = n.openSelf(syscall.O_RDWR | syscall.O_NONBLOCK)
	}
	if errno != 0 {
		fd, errno = n.openSelf(syscall.O_RDONLY | syscall.O_NONBLOCK)
	}
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	t := n.hsmTarget(fd)
	m := n.r.hsm
	// A transition runs to its end once it began: an interrupt (Go
	// programs get signals all the time, for preemption) would otherwise
	// abort an archive in the middle, to be started again from zero.
	ctx = context.WithoutCancel(ctx)
	switch cmd.Verb {
	case hsmctl.HSMArchive:
		err = m.Archive(ctx, t, cmd.Tier)
	case hsmctl.HSMRelease:
		err = m.Release(ctx, t)
	case hsmctl.HSMRestore:
		err = m.Restore(ctx, t)
	case hsmctl.HSMRemove:
		err = m.Remove(ctx, t)
	case hsmctl.HSMSet, hsmctl.HSMClear:
		flag, _ := hsm.FlagByName(cmd.Flag)
		err = m.Mark(t, flag, cmd.Verb == hsmctl.HSMSet)
	}
	rel, _ := n.relPath()
	if err != nil {
		n.r.ctl.setErr("hsm %s %s: %v", cmd, rel, err)
		n.r.log.Warn("hsm: command failed", "cmd", cmd.String(), "path", rel, "err", err)
		return toErrno(err)
	}
	n.r.log.Info("hsm", "cmd", cmd.String(), "path", rel)
	return 0
}

// hsmState answers getxattr of hsmctl.XattrState.
func (n *Node) hsmState(dest []byte) (uint32, syscall.Errno) {
	if n.r.hsm == nil {
		return 0, syscall.ENODATA
	}
	fd, errno := n.openSelf(syscall.O_RDONLY | syscall.O_NONBLOCK)
	if errno != 0 {
		return 0, errno
	}
	defer unix.Close(fd)
	f, err := n.r.hsm.State(n.hsmTarget(fd))
	if err != nil {
		return 0, toErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, toErrno(err)
	}
	fs := hsmctl.FileState{States: f.Flags.Names(), Tier: f.Tier, Object: f.Object, Size: st.Size, Archive: f.ArchivedAt, OpenedAt: f.OpenedAt, Progress: f.Moved}
	if len(fs.States) == 0 {
		fs.States = []string{"exists"}
	}
	if f.Pending != nil {
		fs.Pending = string(f.Pending.Op)
	}
	v, _ := json.Marshal(fs)
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// hsmVictim holds the regular file at (dirfd, name) whose name an unlink
// or a rename is about to remove. The returned func, called once the
// operation is done, tells the manager if that was the file's last name:
// its state goes and its tier object is collected (else the tier would
// keep the archives of deleted files forever). The directory is synced
// first: after a power cut a name that came back must find its state.
func (r *Root) hsmVictim(dirfd int, name string) func() {
	if r.hsm == nil || !r.hsm.Tracking() {
		return func() {}
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() {}
	}
	return func() {
		defer unix.Close(fd)
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 0 && r.hsm.Tracks(fd) {
			if err := syncDir(dirfd); err != nil {
				r.log.Warn("hsm: the state of a deleted file is kept: its directory could not be synced", "name", name, "err", err)
				return
			}
			r.hsm.Forget(hsm.Target{Fd: fd, Busy: func() (int32, int32) { return 0, 0 }})
		}
	}
}

// syncDir syncs a directory that the dircache holds as an O_PATH fd.
func syncDir(dirfd int) error {
	fd, err := unix.Open(backing.ProcFd(dirfd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}
