package sync

import (
	"context"
	"io"
)

// Rsync runs rsync the way hsmfs sync does (the transport options, the
// progress output, the exit codes, SIGTERM when ctx ends) for the other
// commands that copy from a mount: hsmfs follow.
type Rsync struct{ r *rsyncer }

// RsyncOptions configure an Rsync.
type RsyncOptions struct {
	Command   string // the command in progress lines ("follow": "hsmfs follow: copying for ...")
	Prog      string // the local rsync (default "rsync")
	Rsh       string // rsync -e: the remote shell
	RsyncPath string // rsync --rsync-path: rsync on the remote host
	// Progress: rsync's own progress (stdout is a terminal). Without
	// it, a copy that runs over a second prints a line now and then.
	Progress       bool
	Stdout, Stderr io.Writer
}

// NewRsync makes an Rsync.
func NewRsync(o RsyncOptions) *Rsync {
	return &Rsync{newRsyncer(o, nil, false)}
}

// newRsyncer is the rsyncer of hsmfs sync and of NewRsync.
func newRsyncer(o RsyncOptions, extra []string, dryRun bool) *rsyncer {
	if o.Prog == "" {
		o.Prog = "rsync"
	}
	if o.Command == "" {
		o.Command = "sync"
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	r := &rsyncer{prog: o.Prog, rsh: o.Rsh, rsyncPath: o.RsyncPath, extra: extra,
		progress: o.Progress, dryRun: dryRun, stdout: o.Stdout, stderr: o.Stderr}
	if !o.Progress && !dryRun {
		r.ticker = &progressTicker{w: o.Stdout, cmd: o.Command, first: progressFirst, every: progressEvery}
	}
	return r
}

// Copy runs rsync with opts from src to dest. Exit 0, and 24 (a file
// vanished), succeed. It returns rsync's "Total transferred file size".
func (x *Rsync) Copy(ctx context.Context, opts []string, src, dest string) (int64, error) {
	st, err := x.r.copy(ctx, opts, src, dest)
	return st.transferred, err
}

// Exists reports whether path, local or host:path through the remote
// shell, exists: rsync --list-only of it exits 23 when it does not.
func (x *Rsync) Exists(ctx context.Context, path string) (bool, error) {
	err := x.r.quietCode(ctx, 23, "--list-only", path)
	if err == errQuietCode {
		return false, nil
	}
	return err == nil, err
}

// IsRemote reports whether rsync takes p as remote (host:path,
// host::module, rsync://).
func IsRemote(p string) bool { return isRemote(p) }
