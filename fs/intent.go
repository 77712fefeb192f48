package fs

import (
	"syscall"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// intend is the gate of every modification: it records the intents of
// one modification durably and only then returns a token, which the
// caller Ends once BACKING has answered. No code in fs changes BACKING
// without a token from intend or a handle from intendOpen (grep finds
// every tr.Begin and tr.OpenWrite here). A refusal is logged and counted,
// and comes back as the errno to return; BACKING is then untouched.
func (r *Root) intend(ins ...checkpoint.Intent) (checkpoint.Token, syscall.Errno) {
	tok, err := r.tr.Begin(ins...)
	if err != nil {
		r.logJournalError(ins[0].Op, ins[0].Path, err)
		return tok, toErrno(err)
	}
	return tok, 0
}

// intendOpen is intend for a regular file opened for writing: the handle
// counts as a modification for as long as it stays open (op and path
// name it in the log if the journal refuses).
func (r *Root) intendOpen(op checkpoint.Op, rel string, path checkpoint.PathFunc, ino uint64, extra ...checkpoint.Op) (*checkpoint.Handle, syscall.Errno) {
	h, err := r.tr.OpenWrite(path, ino, extra...)
	if err != nil {
		r.logJournalError(op, rel, err)
		return nil, toErrno(err)
	}
	return h, 0
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
