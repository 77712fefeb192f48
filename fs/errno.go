package fs

import (
	"errors"
	"os"
	"syscall"

	"github.com/hsmfs/hsmfs/checkpoint"
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
