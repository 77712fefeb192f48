package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

// Clearing setuid, setgid and file capabilities (HANDLE_KILLPRIV_V2).
//
// Without the capability the kernel asks the daemon for
// security.capability before every write(2), one round trip per write,
// even under kernel passthrough. With it, the kernel stops asking and
// tells the filesystem instead when a modification by a caller without
// CAP_FSETID must clear the bits, as ext4 would:
//   - a WRITE with FUSE_WRITE_KILL_SUIDGID;
//   - a SETATTR with FATTR_KILL_SUIDGID (a truncate by such a caller, any
//     chown of a non-directory);
//   - an OPEN or CREATE with FUSE_OPEN_KILL_SUIDGID (O_TRUNC by such a
//     caller).
//
// Clearing means: setuid goes; setgid goes if group-execute is set, or
// else if the caller is neither in the file's group nor root
// (privsToKill); the security.capability xattr goes. For a write it is a
// chmod of the path with its own intent first (killFd); for a truncate,
// an O_TRUNC open or a chown it is part of that modification, under its
// intent (clearPrivs, killAt).
//
// go-fuse's node API drops the write and open flags on the way to the
// node methods, so killFlags, a thin layer over go-fuse's raw
// filesystem, notes them under the request's cancel channel, which is
// the request's own for as long as it runs, and the node methods look
// them up with killRequested.

// capabilityXattr is the xattr that holds a file's capabilities.
const capabilityXattr = "security.capability"

// killFlags notes which requests asked for the bits to be cleared, and
// the caller's umask of every create, mkdir and mknod (go-fuse's node API
// drops it too; callerMode applies it).
type killFlags struct {
	fuse.RawFileSystem
	pending sync.Map // <-chan struct{} (the request's cancel) -> struct{}
	umasks  sync.Map // <-chan struct{} (the request's cancel) -> uint32
	// dontMask: hsmfs asked for DONT_MASK (mount.go); without it the
	// kernel applies the umask itself, and none is noted.
	dontMask bool
}

// noteUmask keeps umask for the request until the returned func runs.
func (k *killFlags) noteUmask(cancel <-chan struct{}, umask uint32) func() {
	if !k.dontMask {
		return func() {}
	}
	k.umasks.Store(cancel, umask)
	return func() { k.umasks.Delete(cancel) }
}

func (k *killFlags) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer k.noteUmask(cancel, in.Umask)()
	return k.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (k *killFlags) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer k.noteUmask(cancel, in.Umask)()
	return k.RawFileSystem.Mknod(cancel, in, name, out)
}

func (k *killFlags) note(cancel <-chan struct{}, kill bool) func() {
	if !kill {
		return func() {}
	}
	k.pending.Store(cancel, struct{}{})
	return func() { k.pending.Delete(cancel) }
}

func (k *killFlags) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer k.note(cancel, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0)()
	return k.RawFileSystem.Write(cancel, in, data)
}

func (k *killFlags) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer k.note(cancel, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0)()
	return k.RawFileSystem.Writev(cancel, in, data)
}

func (k *killFlags) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer k.note(cancel, in.Mode&fuse.OPEN_KILL_SUIDGID != 0)()
	return k.RawFileSystem.Open(cancel, in, out)
}

func (k *killFlags) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer k.note(cancel, in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0)()
	defer k.noteUmask(cancel, in.Umask)()
	return k.RawFileSystem.Create(cancel, in, name, out)
}

// killRequested reports whether the request behind ctx asked for setuid,
// setgid and capabilities to be cleared.
func (r *Root) killRequested(ctx context.Context) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok || c.Cancel == nil || r.kills == nil {
		return false
	}
	_, kill := r.kills.pending.Load(c.Cancel)
	return kill
}

// callerMode is the mode to make a new entry with in directory dir.
// Where hsmfs negotiated DONT_MASK (with FUSE_POSIX_ACL, mount.go) the
// kernel leaves the caller's umask to the file system, so hsmfs applies
// it as BACKING's file system would: not beneath a default ACL, which
// then decides the bits (and ignores the daemon's own umask). Otherwise
// the kernel has applied it already, and no umask is noted.
func (r *Root) callerMode(ctx context.Context, dir *newParent, mode uint32) uint32 {
	c, ok := ctx.(*fuse.Context)
	if !ok || c.Cancel == nil || r.kills == nil {
		return mode
	}
	v, ok := r.kills.umasks.Load(c.Cancel)
	if !ok || dir.inherits() {
		return mode
	}
	return mode &^ (v.(uint32) & 0o777)
}

// emptySetattr reports whether a SETATTR changes nothing. The kernel
// sends one for chown(-1, -1), and also after it removed a file's
// capabilities before a write (notify_change with ATTR_FORCE alone), and
// hsmfs cannot tell the two apart. On ext4 such a chown clears setuid
// and setgid (and says EPERM to a user who does not own the file); doing
// that here would clear them on every such write by root, where ext4
// keeps them. So an empty SETATTR changes nothing (docs/usage.md lists
// the difference).
func emptySetattr(in *fuse.SetAttrIn) bool {
	return in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER|fuse.FATTR_CTIME) == 0
}

// setattrKills reports whether a SETATTR asks for the bits to be cleared.
func setattrKills(in *fuse.SetAttrIn) bool {
	return in.Valid&fuse.FATTR_KILL_SUIDGID != 0
}

// privsToKill reports the mode without the bits that a modification by
// caller, who lacks CAP_FSETID, clears, and whether anything is to be
// cleared (the mode, or a security.capability xattr). The rules are the
// kernel's (setattr_should_drop_suidgid): setuid always; setgid if
// group-execute is set, or else if the caller is not in the file's group
// nor root (the kernel asks for a chown by root too).
func privsToKill(fd int, caller *fuse.Caller) (mode uint32, chmod, caps bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, false, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, false, false, nil
	}
	mode, chmod = killMode(&st, caller)
	_, xerr := unix.Fgetxattr(fd, capabilityXattr, nil)
	return mode, chmod, xerr == nil, nil
}

// killMode is the mode of st without the bits that caller's modification
// clears, and whether that differs.
func killMode(st *unix.Stat_t, caller *fuse.Caller) (uint32, bool) {
	mode := st.Mode & 07777 &^ unix.S_ISUID
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || !inGroupOrRoot(caller, st.Gid)) {
		mode &^= unix.S_ISGID
	}
	return mode, mode != st.Mode&07777
}

// inGroupOrRoot reports whether the caller is root or in group gid: its
// fsgid, or one of its supplementary groups (which FUSE does not pass on,
// so they are read from /proc; only a setgid file without group-execute
// asks).
func inGroupOrRoot(caller *fuse.Caller, gid uint32) bool {
	if caller == nil || caller.Uid == 0 || caller.Gid == gid {
		return caller != nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", caller.Pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(rest) {
				if g == strconv.FormatUint(uint64(gid), 10) {
					return true
				}
			}
		}
	}
	return false
}

// callerOf is the caller of the request behind ctx, or nil.
func callerOf(ctx context.Context) *fuse.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return c
	}
	return nil
}

// killPrivs clears the bits on the file open at fd. The caller holds an
// intent that names the change.
func killPrivs(fd int, mode uint32, chmod, caps bool) error {
	if chmod {
		if err := unix.Fchmod(fd, mode); err != nil {
			return err
		}
	}
	if caps {
		if err := unix.Fremovexattr(fd, capabilityXattr); err != nil && !errors.Is(err, unix.ENODATA) {
			return err
		}
	}
	return nil
}

// killFd clears the bits on the file open at fd if there are any,
// recording a chmod of path first.
func (r *Root) killFd(ctx context.Context, fd int, path func() (string, bool)) syscall.Errno {
	mode, chmod, caps, err := privsToKill(fd, callerOf(ctx))
	if err != nil || (!chmod && !caps) {
		return toErrno(err)
	}
	if rel, ok := path(); ok {
		tok, errno := r.intend(checkpoint.Intent{Op: checkpoint.OpChmod, Path: rel})
		if errno != 0 {
			return errno
		}
		defer tok.End()
	}
	return toErrno(killPrivs(fd, mode, chmod, caps))
}

// killAt is killFd for (dirfd, name), under an intent the caller holds.
func killAt(ctx context.Context, dirfd int, name string) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return toErrno(err) // only a regular file has bits to clear
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	return toErrno(clearPrivs(ctx, fd))
}

// clearPrivs clears the bits on the file open at fd, under an intent the
// caller holds.
func clearPrivs(ctx context.Context, fd int) error {
	mode, chmod, caps, err := privsToKill(fd, callerOf(ctx))
	if err != nil || (!chmod && !caps) {
		return err
	}
	return killPrivs(fd, mode, chmod, caps)
}

// hasPrivs reports whether the file open at fd has setuid, setgid or
// capabilities.
func hasPrivs(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return true
	}
	_, err := unix.Fgetxattr(fd, capabilityXattr, nil)
	return err == nil
}
