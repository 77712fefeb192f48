package fs

import (
	"context"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

// The inode flags ioctls (lsattr, chattr), the only ones that the kernel
// forwards to a FUSE filesystem for its own files and directories
// (fileattr_get and fileattr_set). FIEMAP never reaches hsmfs: the kernel
// answers it with EOPNOTSUPP because FUSE has no fiemap operation.
const (
	iocGetFlags    = unix.FS_IOC_GETFLAGS
	iocSetFlags    = unix.FS_IOC_SETFLAGS
	iocFsGetXattr  = 0x801c581f // FS_IOC_FSGETXATTR: _IOR('X', 31, struct fsxattr)
	iocFsSetXattr  = 0x401c5820 // FS_IOC_FSSETXATTR: _IOW('X', 32, struct fsxattr)
	ioctlArgMaxLen = 64         // struct fsxattr is 28 bytes, the flags 4
)

var _ = (gofs.NodeIoctler)((*Node)(nil))

// Ioctl serves the inode flags ioctls on files and directories: reading
// them is forwarded to BACKING, changing them (chattr) is a modification
// with a durable intent first, recorded as a setxattr of the path. Any
// other ioctl is refused with ENOTTY, as a filesystem without it would:
// an ioctl may modify a file in ways that hsmfs cannot name. This method
// is the only way an ioctl reaches BACKING; go-fuse calls it before the
// handle's own Ioctl, for directories too.
func (n *Node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	var modifies bool
	switch cmd {
	case iocGetFlags, iocFsGetXattr:
	case iocSetFlags, iocFsSetXattr:
		modifies = true
	default:
		return 0, syscall.ENOTTY
	}
	fd, done, errno := n.ioctlFd(f)
	if errno != 0 {
		return 0, errno
	}
	defer done()
	if modifies {
		rel, ok := n.relPath()
		if !ok {
			return 0, syscall.ENOENT
		}
		tok, errno := n.r.intend(checkpoint.Intent{Op: checkpoint.OpSetxattr, Ino: n.StableAttr().Ino, Path: rel})
		if errno != 0 {
			return 0, errno
		}
		defer tok.End()
	}
	// The kernel sized the buffers from the command; a scratch buffer
	// keeps a backing filesystem that writes more than that in bounds.
	var buf [ioctlArgMaxLen]byte
	copy(buf[:], input)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return 0, e
	}
	if modifies {
		invalidateAttrs(&n.Inode) // its ctime changed (cache.go)
	}
	copy(output, buf[:])
	return 0, 0
}

// ioctlFd is a descriptor of the node's backing file for an ioctl: the
// open file's own, or for a directory a new read-only one.
func (n *Node) ioctlFd(f gofs.FileHandle) (int, func(), syscall.Errno) {
	if file, ok := f.(*File); ok {
		return file.fd, func() {}, 0
	}
	if n.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return -1, nil, syscall.ENOTTY
	}
	fd, errno := n.openDir()
	if errno != 0 {
		return -1, nil, errno
	}
	return fd, func() { unix.Close(fd) }, 0
}
