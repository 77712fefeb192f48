package fs

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/hsm"
)

// toErrno is the one place where errors become errnos (no other file of
// fs calls go-fuse's ToErrno). The packages below wrap with %w and keep
// the syscall errno of the cause (ENOSPC, EIO, ...) in the chain; the os
// package's sentinel errors map as go-fuse maps them; everything else is
// EIO.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.Is(err, checkpoint.ErrUnknownQuery), errors.Is(err, checkpoint.ErrBadConsumerName),
		errors.Is(err, checkpoint.ErrFullCopy):
		return syscall.EINVAL
	case errors.Is(err, checkpoint.ErrUnknownConsumer):
		return syscall.ENOENT
	case errors.Is(err, checkpoint.ErrConsumerExists):
		return syscall.EEXIST
	case errors.Is(err, checkpoint.ErrClosed):
		return syscall.EIO
	case errors.Is(err, checkpoint.ErrAbandoned):
		return syscall.EINTR
	case hsmErrno(err) != 0:
		return hsmErrno(err)
	case errors.As(err, &e):
		return e
	}
	for _, m := range osErrnos {
		if errors.Is(err, m.err) {
			return m.errno
		}
	}
	return syscall.EIO
}

// osErrnos are the os package's sentinels, mapped as go-fuse maps them.
var osErrnos = []struct {
	err   error
	errno syscall.Errno
}{
	{os.ErrPermission, syscall.EPERM}, {os.ErrExist, syscall.EEXIST},
	{os.ErrNotExist, syscall.ENOENT}, {os.ErrInvalid, syscall.EINVAL},
}

// hsmErrnos are the HSM's refusals (internal/hsm); the command line says
// what each means for the command that got it.
var hsmErrnos = []struct {
	err   error
	errno syscall.Errno
}{
	{hsm.ErrTier, syscall.EIO}, {hsm.ErrLost, syscall.EIO},
	{hsm.ErrNoTier, syscall.ENXIO}, {hsm.ErrTierInUse, syscall.EBUSY},
	{hsm.ErrNotRegular, syscall.EINVAL}, {hsm.ErrNotArchived, syscall.ENODATA},
	{hsm.ErrDirty, syscall.ESTALE}, {hsm.ErrBusy, syscall.EBUSY},
	{hsm.ErrChanged, syscall.EAGAIN}, {hsm.ErrReleased, syscall.EPERM},
	{hsm.ErrRefused, syscall.EPERM}, {hsm.ErrOtherFS, syscall.EXDEV},
	{context.DeadlineExceeded, syscall.EIO}, {context.Canceled, syscall.EINTR},
}

func hsmErrno(err error) syscall.Errno {
	for _, m := range hsmErrnos {
		if errors.Is(err, m.err) {
			return m.errno
		}
	}
	return 0
}
