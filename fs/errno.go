package fs

import (
	"errors"
	"syscall"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// toErrno is the one place where errors become errnos. The packages below
// wrap with %w and keep the syscall errno of the cause (ENOSPC, EIO, ...)
// in the chain; everything without one is EIO.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.Is(err, checkpoint.ErrUnknownQuery), errors.Is(err, checkpoint.ErrBadConsumerName):
		return syscall.EINVAL
	case errors.Is(err, checkpoint.ErrUnknownConsumer):
		return syscall.ENOENT
	case errors.Is(err, checkpoint.ErrConsumerExists):
		return syscall.EEXIST
	case errors.Is(err, checkpoint.ErrClosed):
		return syscall.EIO
	case errors.As(err, &e):
		return e
	}
	return syscall.EIO
}

// logJournalError reports a modification that the tracker refused (its
// intent could not be recorded, so BACKING was left alone): in the log,
// and to Config.OnJournalError with the errno that the caller returns.
// Every such refusal goes through here, so that the count is complete.
func (r *Root) logJournalError(op checkpoint.Op, path string, err error) {
	r.log.Error("journal: modification refused", "op", op.String(), "path", path, "err", err)
	if r.onJournalError != nil {
		r.onJournalError(toErrno(err))
	}
}
