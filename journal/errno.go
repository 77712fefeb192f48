package journal

import (
	"errors"
	"strings"
	"syscall"
)

// errnoError keeps an error's message and adds the errno that badger had
// flattened into it.
type errnoError struct {
	err   error
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.err.Error() }

func (e *errnoError) Unwrap() []error { return []error{e.err, e.errno} }

// recoverableErrnos are the errnos that callers act on (a full or failing
// device); badger's messages contain their strerror text.
var recoverableErrnos = []syscall.Errno{
	syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, syscall.EFBIG,
	syscall.ENOMEM, syscall.EACCES, syscall.EPERM, syscall.EMFILE, syscall.ENFILE,
}

// withErrno makes errors.Is(err, errno) work on an error from badger,
// which formats the errors of its file operations with %v (see y.Wrap).
func withErrno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return err
	}
	msg := err.Error()
	for _, e := range recoverableErrnos {
		if strings.Contains(msg, e.Error()) {
			return &errnoError{err: err, errno: e}
		}
	}
	return err
}
