package fs

import (
	"context"
	"syscall"

	"github.com/hsmfs/hsmfs/internal/backing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"golang.org/x/sys/unix"
)

// The reads that go-fuse's LoopbackNode would serve from the absolute
// path of the node (BACKING's path joined with the node's): that path
// fails with ENAMETOOLONG once it passes PATH_MAX, although the kernel
// lets a tree grow deeper through relative steps. Here every read
// resolves the node's parent through fds (Node.parentFd: openBeneath
// walks long paths in pieces, and identity.go checks the result) and
// acts on the final name with an *at call that does not follow a
// symlink, so a tree of any depth reads as BACKING holds it, and the
// length of BACKING's own path does not matter.

var (
	_ = (gofs.NodeGetattrer)((*Node)(nil))
	_ = (gofs.NodeStatxer)((*Node)(nil))
	_ = (gofs.NodeReadlinker)((*Node)(nil))
	_ = (gofs.NodeGetxattrer)((*Node)(nil))
	_ = (gofs.NodeListxattrer)((*Node)(nil))
	_ = (gofs.NodeOpendirHandler)((*Node)(nil))
	_ = (gofs.NodeReaddirer)((*Node)(nil))
	_ = (gofs.NodeStatfser)((*Node)(nil))
)

// at resolves the node to (dirfd, name) for an *at call; for the root,
// dirfd is the root fd and name is "". The parent is checked to be the
// node's (identity.go), and with check the name too (for modifications).
// done gives the fd back.
func (n *Node) at(check bool) (dirfd int, name string, done func(), errno syscall.Errno) {
	if n.IsRoot() {
		return n.r.b.RootFd(), "", func() {}, 0
	}
	dirfd, name, errno = n.parentFd(check)
	if errno != 0 {
		return -1, "", nil, errno
	}
	return dirfd, name, func() { n.r.b.PutDir(dirfd) }, 0
}

func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.writers.Load() > 0 {
		out.SetTimeout(writerAttrTimeout) // cache.go
	}
	if fga, ok := f.(gofs.FileGetattrer); ok {
		return fga.Getattr(ctx, out)
	}
	dirfd, name, done, errno := n.at(false)
	if errno != 0 {
		return errno
	}
	defer done()
	return statOut(dirfd, name, out)
}

func (n *Node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if n.writers.Load() > 0 {
		out.SetTimeout(writerAttrTimeout) // cache.go
	}
	if fsx, ok := f.(gofs.FileStatxer); ok {
		return fsx.Statx(ctx, flags, mask, out)
	}
	dirfd, name, done, errno := n.at(false)
	if errno != 0 {
		return errno
	}
	defer done()
	// Only the sync flags are the caller's; the node itself is never
	// followed if it is a symlink.
	fl := int(flags)&(unix.AT_STATX_FORCE_SYNC|unix.AT_STATX_DONT_SYNC) | unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		fl |= unix.AT_EMPTY_PATH
	}
	var st unix.Statx_t
	if err := unix.Statx(dirfd, name, fl, int(mask), &st); err != nil {
		return toErrno(err)
	}
	out.FromStatx(&st)
	return 0
}

func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	dirfd, name, done, errno := n.at(false)
	if errno != 0 {
		return nil, errno
	}
	defer done()
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
	}
}

func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == hsmctl.XattrState {
		return n.hsmState(dest) // not stored: the HSM's state (hsm.go)
	}
	var sz int
	errno := n.withXattrPath(false, func(p string, fd int) (err error) {
		if fd >= 0 {
			sz, err = unix.Fgetxattr(fd, attr, dest)
		} else {
			sz, err = unix.Lgetxattr(p, attr, dest)
		}
		return err
	})
	return uint32(max(sz, 0)), errno
}

func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var sz int
	errno := n.withXattrPath(false, func(p string, fd int) (err error) {
		if fd >= 0 {
			sz, err = unix.Flistxattr(fd, dest)
		} else {
			sz, err = unix.Llistxattr(p, dest)
		}
		return err
	})
	return uint32(max(sz, 0)), errno
}

// withXattrPath names the node for the xattr calls: the root by its fd,
// anything else as /proc/self/fd/DIRFD/NAME for the l*xattr calls, which
// have no *at form and do not follow the final name.
func (n *Node) withXattrPath(check bool, do func(p string, fd int) error) syscall.Errno {
	if n.IsRoot() {
		return toErrno(do("", n.r.b.RootFd()))
	}
	dirfd, name, done, errno := n.at(check)
	if errno != 0 {
		return errno
	}
	defer done()
	return toErrno(do(backing.ProcPath(dirfd, name), -1))
}

// OpendirHandle opens the directory beneath the root fd. Its ioctls go to
// Node.Ioctl (ioctl.go), never straight to the backing fd. The kernel
// may keep the listing until the directory changes (cache.go).
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, errno := n.Readdir(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	return ds, dirCacheFlags, 0
}

func (n *Node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	fd, errno := n.openDir()
	if errno != 0 {
		return nil, errno
	}
	return gofs.NewLoopbackDirStreamFd(fd)
}

func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(n.r.b.RootFd(), &s); err != nil {
		return toErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

// openDir opens the directory n for reading, checked to be n.
func (n *Node) openDir() (int, syscall.Errno) {
	pfd, _, errno := n.dirFd()
	if errno != 0 {
		return -1, errno
	}
	defer n.r.b.PutDir(pfd)
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	return fd, toErrno(err)
}
