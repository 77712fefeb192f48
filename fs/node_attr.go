package fs

import (
	"context"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeSetattrer)((*Node)(nil))
	_ = (gofs.NodeSetxattrer)((*Node)(nil))
	_ = (gofs.NodeRemovexattrer)((*Node)(nil))
	_ = (gofs.NodeCopyFileRanger)((*Node)(nil))
)

// setattrIntents lists the kinds of modification that one SETATTR makes.
func setattrIntents(in *fuse.SetAttrIn, ino uint64, rel string) []checkpoint.Intent {
	var ins []checkpoint.Intent
	add := func(op checkpoint.Op) { ins = append(ins, checkpoint.Intent{Op: op, Ino: ino, Path: rel}) }
	// Clearing setuid and setgid (setattrKills) is part of the chown or
	// truncate that asks for it, under its intent.
	if _, ok := in.GetMode(); ok {
		add(checkpoint.OpChmod)
	}
	_, uok := in.GetUID()
	_, gok := in.GetGID()
	if uok || gok {
		add(checkpoint.OpChown)
	}
	if _, ok := in.GetSize(); ok {
		add(checkpoint.OpTruncate)
	}
	_, mok := in.GetMTime()
	_, aok := in.GetATime()
	if mok || aok {
		add(checkpoint.OpUtimens)
	}
	return ins
}

// Setattr records chmod, chown, truncate and utimens, then applies them
// through the open file if there is one, or through the parent's fd.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) (errno syscall.Errno) {
	if emptySetattr(in) {
		return n.Getattr(ctx, f, out)
	}
	rel, named := n.relPath()
	if ins := setattrIntents(in, n.StableAttr().Ino, rel); len(ins) > 0 && named {
		tok, errno := n.r.intend(ins...)
		if errno != 0 {
			return errno
		}
		defer tok.End()
	} else if !named && f == nil {
		return syscall.ENOENT
	}
	if size, ok := in.GetSize(); ok && f == nil {
		done, errno := n.hsmSetattrSize(ctx, size)
		if errno != 0 {
			return errno
		}
		defer func() { errno = done(errno) }()
	}
	if file, ok := f.(*File); ok {
		if errno := file.LoopbackFile.Setattr(ctx, in, out); errno != 0 || !setattrKills(in) {
			return errno
		}
		if err := clearPrivs(ctx, file.fd); err != nil {
			return toErrno(err)
		}
		return file.LoopbackFile.Getattr(ctx, out)
	}
	if n.IsRoot() {
		return n.setattrRoot(in, out)
	}
	dirfd, name, errno := n.parentFd(true)
	if errno != 0 {
		return errno
	}
	defer n.r.b.PutDir(dirfd)
	if m, ok := in.GetMode(); ok {
		// The kernel resolves symlinks before a chmod reaches FUSE, so
		// name is not a symlink here.
		if err := unix.Fchmodat(dirfd, name, m, 0); err != nil {
			return toErrno(err)
		}
	}
	if su, sg, ok := chownIDs(in); ok {
		if err := unix.Fchownat(dirfd, name, su, sg, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return toErrno(err)
		}
	}
	// Truncate before the times, so that an explicit mtime wins.
	if sz, ok := in.GetSize(); ok {
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return toErrno(err)
		}
		err = unix.Ftruncate(fd, int64(sz))
		unix.Close(fd)
		if err != nil {
			return toErrno(err)
		}
	}
	if ts, ok := utimes(in); ok {
		if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return toErrno(err)
		}
	}
	if setattrKills(in) {
		if errno := killAt(ctx, dirfd, name); errno != 0 {
			return errno
		}
	}
	return statOut(dirfd, name, out)
}

// chownIDs gives the owner and group a SETATTR asks for, -1 for "keep".
func chownIDs(in *fuse.SetAttrIn) (uid, gid int, ok bool) {
	u, uok := in.GetUID()
	g, gok := in.GetGID()
	uid, gid = -1, -1
	if uok {
		uid = int(u)
	}
	if gok {
		gid = int(g)
	}
	return uid, gid, uok || gok
}

func utimes(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if !mok && !aok {
		return nil, false
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		ts[0] = unix.NsecToTimespec(atime.UnixNano())
	}
	if mok {
		ts[1] = unix.NsecToTimespec(mtime.UnixNano())
	}
	return ts, true
}

func statOut(dirfd int, name string, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	var btime syscall.Timespec
	if err := statAt(dirfd, name, &st, &btime); err != nil {
		return toErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// setattrRoot changes the mount root itself, through the root fd.
func (n *Node) setattrRoot(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	fd := n.r.b.RootFd()
	if m, ok := in.GetMode(); ok {
		if err := unix.Fchmod(fd, m); err != nil {
			return toErrno(err)
		}
	}
	if su, sg, ok := chownIDs(in); ok {
		if err := unix.Fchown(fd, su, sg); err != nil {
			return toErrno(err)
		}
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	if ts, ok := utimes(in); ok {
		if err := futimens(fd, ts); err != nil {
			return toErrno(err)
		}
	}
	return statOut(fd, "", out)
}

func (n *Node) xattrOp(op checkpoint.Op, do func(p string, fd int) error) syscall.Errno {
	rel, ok := n.relPath()
	if !ok {
		return syscall.ENOENT
	}
	tok, errno := n.r.intend(checkpoint.Intent{Op: op, Ino: n.StableAttr().Ino, Path: rel})
	if errno != 0 {
		return errno
	}
	defer tok.End()
	return n.withXattrPath(true, do)
}

// Setxattr and Removexattr invalidate the node's attributes: an ACL
// changes the mode, which the kernel's permission checks read from its
// cache, and the kernel marks only the ctime stale (cache.go).
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if attr == hsmctl.XattrCommand {
		return n.hsmCommand(ctx, data) // not stored: a command (hsm.go)
	}
	errno := n.xattrOp(checkpoint.OpSetxattr, func(p string, fd int) error {
		if fd >= 0 {
			return unix.Fsetxattr(fd, attr, data, int(flags))
		}
		return unix.Lsetxattr(p, attr, data, int(flags))
	})
	if errno == 0 {
		invalidateAttrs(&n.Inode)
	}
	return errno
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	errno := n.xattrOp(checkpoint.OpRemovexattr, func(p string, fd int) error {
		if fd >= 0 {
			return unix.Fremovexattr(fd, attr)
		}
		return unix.Lremovexattr(p, attr)
	})
	if errno == 0 {
		invalidateAttrs(&n.Inode)
	}
	return errno
}

// CopyFileRange records the intent on the destination and copies between
// the backing fds (the loopback's version would bypass the journal).
func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode,
	fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	fin, ok1 := fhIn.(*File)
	fout, ok2 := fhOut.(*File)
	if !ok1 || !ok2 {
		return 0, syscall.EXDEV
	}
	tok, errno := fout.begin(checkpoint.OpCopyRange)
	if errno != 0 {
		return 0, errno
	}
	defer tok.End()
	// The kernel sends no kill flag with a copy; as for a write, a
	// caller other than root clears the bits (killpriv.go).
	if c := callerOf(ctx); c != nil && c.Uid != 0 {
		if errno := fout.r.killFd(ctx, fout.fd, fout.path); errno != 0 {
			return 0, errno
		}
	}
	oi, oo := int64(offIn), int64(offOut)
	cnt, err := unix.CopyFileRange(fin.fd, &oi, fout.fd, &oo, int(length), int(flags))
	return uint32(cnt), toErrno(err)
}

// futimens sets the times of the file open at fd (utimensat with a NULL
// path, which x/sys/unix has no wrapper for).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
