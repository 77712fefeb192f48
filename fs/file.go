package fs

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

// File is an open backing file. A writable File holds a tracker Handle:
// its intent is durable from open to release, and every write checks
// (one atomic load) that the intent is of the current period.
//
// Kernel passthrough hands reads and writes straight to the kernel, so
// hsmfs never sees them. That is safe here because the intent is taken at
// open, not at write: a writable File holds a durable intent from open to
// release, and every query re-records it in its new period. ioctls go
// through Node.Ioctl (ioctl.go), never through the File.
type File struct {
	*gofs.LoopbackFile
	fd    int // owned by LoopbackFile, valid until Release
	write bool
	rdwr  bool // opened O_RDWR: fd can serve as the inode's backing file
	h     *checkpoint.Handle
	path  checkpoint.PathFunc
	r     *Root
	// node is the file's node when it is open for writing (else nil):
	// it counts the file among its writers from before the open reached
	// the HSM (countOpen) until Release.
	node *Node
	// opened is the file's node, which counted the open (Node.opens)
	// before newFile and uncounts it at Release.
	opened *Node
	// tierCopy: fd is a temporary copy of a released file's content, read
	// by one of hsmfs's own consumers (norecall.go); never passed through.
	tierCopy bool

	pfd atomic.Int32 // extra O_RDWR fd handed to the kernel, or -1
}

var (
	_ = (gofs.FileWriter)((*File)(nil))
	_ = (gofs.FileAllocater)((*File)(nil))
	_ = (gofs.FileReleaser)((*File)(nil))
	_ = (gofs.FileFlusher)((*File)(nil))
	_ = (gofs.FilePassthroughFder)((*File)(nil))
	_ = (gofs.FileWritever)((*File)(nil))
	_ = (gofs.FileSetattrer)((*File)(nil))
	_ = (gofs.FileIoctler)((*File)(nil))
)

func newFile(fd int, flags uint32, h *checkpoint.Handle, r *Root, path checkpoint.PathFunc, node *Node) *File {
	f := &File{LoopbackFile: gofs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), "")), fd: fd,
		write: isWrite(flags), rdwr: flags&syscall.O_ACCMODE == syscall.O_RDWR, h: h, r: r, path: path, opened: node}
	f.pfd.Store(-1)
	if f.write && node != nil {
		f.node = node // counted among its writers by the caller (countOpen)
	}
	return f
}

// PassthroughFd gives the kernel the backing file for passthrough I/O.
// go-fuse registers one backing file per inode, at its first open, and
// hands it to every later open of the inode while any is open. So the fd
// must allow reading and writing whatever the first open asked for: a
// read-only first open must not leave a later writable open with a
// read-only backing file. The kernel still enforces each open's own mode
// on the FUSE file. When an O_RDWR fd cannot be had (a read-only
// filesystem, a running executable), passthrough is declined and the I/O
// goes through hsmfs.
//
// A file with setuid, setgid or capabilities is not passed through
// either: the kernel writes a passed-through file with hsmfs's
// credentials, which keep the bits that an unprivileged writer must
// clear (killpriv.go), so its writes must reach hsmfs.
func (f *File) PassthroughFd() (int, bool) {
	if !f.r.passthrough || f.tierCopy || hasPrivs(f.fd) {
		return -1, false
	}
	if f.rdwr {
		return f.fd, true
	}
	if fd := f.pfd.Load(); fd >= 0 {
		return int(fd), true
	}
	rel, ok := f.path()
	if !ok {
		return -1, false
	}
	fd, err := f.r.b.OpenBeneath(rel, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false
	}
	// The two fds must be the same file: a rename could have swapped
	// the name since this File was opened.
	var a, b unix.Stat_t
	if unix.Fstat(f.fd, &a) != nil || unix.Fstat(fd, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		unix.Close(fd)
		return -1, false
	}
	f.pfd.Store(int32(fd))
	return fd, true
}

func (f *File) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.h == nil {
		return 0, syscall.EBADF
	}
	if errno := f.beforeWrite(ctx); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

// beforeWrite checks that the handle's intent is current, and clears
// setuid, setgid and capabilities if the kernel asks (killpriv.go).
func (f *File) beforeWrite(ctx context.Context) syscall.Errno {
	if err := f.h.Touch(); err != nil {
		f.r.logJournalError(checkpoint.OpWrite, "", err)
		return toErrno(err)
	}
	if f.r.killRequested(ctx) {
		return f.r.killFd(ctx, f.fd, f.path)
	}
	return 0
}

// Writev is Write for data that go-fuse received in pieces; without it the
// embedded LoopbackFile would write them unchecked.
func (f *File) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if f.h == nil {
		return 0, syscall.EBADF
	}
	if errno := f.beforeWrite(ctx); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Writev(ctx, data, off)
}

// begin records an intent for an operation through the handle that ops
// should name separately (fallocate, copy_file_range).
func (f *File) begin(op checkpoint.Op) (checkpoint.Token, syscall.Errno) {
	if f.h == nil {
		return checkpoint.Token{}, syscall.EBADF
	}
	if err := f.h.Touch(); err != nil {
		f.r.logJournalError(op, "", err)
		return checkpoint.Token{}, toErrno(err)
	}
	rel, ok := f.path()
	if !ok {
		return checkpoint.Token{}, 0 // no name left: nothing to list
	}
	return f.r.intend(checkpoint.Intent{Op: op, Path: rel})
}

func (f *File) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	tok, errno := f.begin(checkpoint.OpFallocate)
	if errno != 0 {
		return errno
	}
	defer tok.End()
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

// Flush (every close) and Release of a writable file invalidate its
// attributes: writes through a shared mapping of a passthrough file
// reach BACKING without a request, so nothing else tells the kernel
// that the times changed (cache.go).
func (f *File) Flush(ctx context.Context) syscall.Errno {
	errno := f.LoopbackFile.Flush(ctx)
	if f.node != nil {
		invalidateAttrs(&f.node.Inode)
	}
	return errno
}

func (f *File) Release(ctx context.Context) syscall.Errno {
	if fd := f.pfd.Swap(-1); fd >= 0 {
		unix.Close(int(fd))
	}
	errno := f.LoopbackFile.Release(ctx)
	if f.h != nil {
		f.h.Release()
	}
	if f.node != nil {
		f.node.writers.Add(-1)
		invalidateAttrs(&f.node.Inode)
	}
	if f.opened != nil {
		f.opened.opens.Add(-1)
	}
	return errno
}

// Setattr and Ioctl of the embedded LoopbackFile would change BACKING
// through the fd with no intent. go-fuse asks the node first (Node
// implements NodeSetattrer and NodeIoctler), and Node.Setattr records
// before it calls LoopbackFile.Setattr itself; so these are reached only
// if that dispatch ever changes, and then they refuse rather than write
// unrecorded. TestFileInheritsNoModification pins the rest.
func (f *File) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

func (f *File) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}
