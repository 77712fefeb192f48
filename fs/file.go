package fs

import (
	"context"
	"os"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hsmfs/hsmfs/checkpoint"
)

// File is an open backing file. A writable File holds a tracker Handle:
// its intent is durable from open to release, and every write checks
// (one atomic load) that the intent is of the current period.
//
// Two loopback paths that would bypass the journal are closed here:
// kernel passthrough (PassthroughFd), which would hand writes straight to
// the kernel, and ioctl, which can modify a file (FS_IOC_SETFLAGS, ...).
type File struct {
	*gofs.LoopbackFile
	fd   int // owned by LoopbackFile, valid until Release
	h    *checkpoint.Handle
	path checkpoint.PathFunc
	r    *Root
}

var (
	_ = (gofs.FileWriter)((*File)(nil))
	_ = (gofs.FileAllocater)((*File)(nil))
	_ = (gofs.FileReleaser)((*File)(nil))
	_ = (gofs.FilePassthroughFder)((*File)(nil))
	_ = (gofs.FileIoctler)((*File)(nil))
)

func newFile(fd int, h *checkpoint.Handle, r *Root, path checkpoint.PathFunc) *File {
	return &File{LoopbackFile: gofs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), "")), fd: fd, h: h, r: r, path: path}
}

// PassthroughFd declines kernel passthrough: the kernel would write to
// BACKING without hsmfs seeing it.
func (f *File) PassthroughFd() (int, bool) { return -1, false }

// Ioctl is refused: several ioctls modify the file.
func (f *File) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (f *File) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.h == nil {
		return 0, syscall.EBADF
	}
	if err := f.h.Touch(); err != nil {
		f.r.logJournalError(checkpoint.OpWrite, "", err)
		return 0, toErrno(err)
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

// begin records an intent for an operation through the handle that ops
// should name separately (fallocate, copy_file_range).
func (f *File) begin(op checkpoint.Op) (checkpoint.Token, syscall.Errno) {
	if f.h == nil {
		return checkpoint.Token{}, syscall.EBADF
	}
	if err := f.h.Touch(); err != nil {
		return checkpoint.Token{}, toErrno(err)
	}
	rel, ok := f.path()
	if !ok {
		return checkpoint.Token{}, 0 // no name left: nothing to list
	}
	tok, err := f.r.tr.Begin(checkpoint.Intent{Op: op, Path: rel})
	if err != nil {
		f.r.logJournalError(op, rel, err)
		return tok, toErrno(err)
	}
	return tok, 0
}

func (f *File) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	tok, errno := f.begin(checkpoint.OpFallocate)
	if errno != 0 {
		return errno
	}
	defer tok.End()
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

func (f *File) Release(ctx context.Context) syscall.Errno {
	errno := f.LoopbackFile.Release(ctx)
	if f.h != nil {
		f.h.Release()
	}
	return errno
}
