package natsexport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	hsmsync "github.com/hsmfs/hsmfs/internal/sync"
)

// SOURCE is the mount point on this host, or host:path on another one,
// reached as hsmfs sync reaches a remote DEST: rsync through the remote
// shell (-e) and the remote rsync (--rsync-path). What the follower
// learns of SOURCE, it learns through rsync, so that both are looked at
// alike, except where a local SOURCE allows a better look:
//
//   - that SOURCE is a live mount: its .hsm/ctl exists (rsync
//     --list-only of a remote one);
//   - which names are directories now (the ancestor check of a list, and
//     the names copied whole): lstat in a local SOURCE; in DEST for a
//     remote one, where the copy has just put what SOURCE held;
//   - no recall storm: a local follower registers itself through ctl
//     ("norecall PID"), so that the rsync it starts inherits it; a remote
//     rsync is started by the remote shell, so the --rsync-path that
//     reaches it first registers the shell's own pid, which exec hands
//     to rsync.

// checkPaths refuses a SOURCE that is not an hsmfs mount, a DEST that
// is not a directory, and a local DEST and SOURCE that overlap, before
// anything is read; and makes the follower's rsync.
func (f *Follower) checkPaths(ctx context.Context) error {
	c := &f.cfg
	if fi, err := os.Stat(c.Dest); err != nil || !fi.IsDir() {
		return fmt.Errorf("DEST %s is not a directory", c.Dest)
	}
	rsyncPath := c.RsyncPath
	if f.remote {
		host, path, _ := strings.Cut(c.Source, ":")
		if host == "" || strings.HasPrefix(path, ":") || strings.HasPrefix(c.Source, "rsync://") {
			return fmt.Errorf("source %q: a remote SOURCE is host:path, reached through the remote shell (not an rsync daemon)", c.Source)
		}
		if path == "" {
			c.Source += "." // host: is the remote home directory
			path = "."
		}
		rsyncPath = registeringRsyncPath(path, c.RsyncPath)
	}
	f.rs = hsmsync.NewRsync(hsmsync.RsyncOptions{Command: "follow", Prog: c.Rsync, Rsh: c.Rsh, RsyncPath: rsyncPath,
		Progress: c.Progress, Stdout: c.Stdout, Stderr: c.Stderr})
	if f.remote {
		if err := f.live(ctx); err != nil {
			return fmt.Errorf("source %s is not an hsmfs mount: %w", c.Source, err)
		}
		return nil
	}
	if fi, err := os.Stat(c.Source); err != nil || !fi.IsDir() {
		return fmt.Errorf("source %s is not a directory", c.Source)
	}
	if err := f.live(ctx); err != nil {
		return fmt.Errorf("source %s is not an hsmfs mount", c.Source)
	}
	src, errS := filepath.EvalSymlinks(c.Source)
	dst, errD := filepath.EvalSymlinks(c.Dest)
	if errS == nil && errD == nil && (src == dst || within(dst, src) || within(src, dst)) {
		// A copy into the mount would be tracked and copied again; a
		// whole copy into a parent of the mount would delete it.
		return fmt.Errorf("DEST %s and source %s overlap", c.Dest, c.Source)
	}
	return nil
}

// live fails unless SOURCE's .hsm/ctl exists: a mount point whose mount
// is down is a bare directory.
func (f *Follower) live(ctx context.Context) error {
	ctl := filepath.Join(f.cfg.Source, hsmctl.Dir, hsmctl.CtlFile)
	if !f.remote {
		_, err := os.Stat(ctl)
		return err
	}
	ok, err := f.rs.Exists(ctx, ctl)
	if err == nil && !ok {
		err = errors.New(hsmctl.Dir + "/" + hsmctl.CtlFile + " is missing")
	}
	return err
}

// looked is where the follower looks at what a name is now: SOURCE, or
// DEST when SOURCE is remote.
func (f *Follower) looked() string {
	if f.remote {
		return f.cfg.Dest
	}
	return f.cfg.Source
}

// registeringRsyncPath is the --rsync-path of a remote SOURCE at mount
// point path: a POSIX shell command that refuses to start rsync unless
// the mount is live (checked again on the mount's host, right before the
// copy: the check of the round ran in another session), registers the
// shell's pid with the mount's ctl (quietly: a user who may not write ctl
// still copies, and a released file is then restored on read), then
// becomes the remote rsync, keeping that pid.
func registeringRsyncPath(path, rsyncPath string) string {
	if rsyncPath == "" {
		rsyncPath = "rsync"
	}
	ctl := remotePath(path + "/" + hsmctl.Dir + "/" + hsmctl.CtlFile)
	return fmt.Sprintf("[ -e %s ] || { echo 'hsmfs follow: %s is not a live hsmfs mount' >&2; exit 1; }; "+
		"{ echo norecall $$ >%s; } 2>/dev/null; exec %s", ctl, strings.ReplaceAll(path, "'", ""), ctl, rsyncPath)
}

// remotePath quotes path for the remote POSIX shell, keeping a leading ~
// (the remote home, which rsync takes too) outside the quotes.
func remotePath(path string) string {
	switch {
	case path == "~":
		return `"$HOME"`
	case strings.HasPrefix(path, "~/"):
		return `"$HOME"/` + shellQuote(path[2:])
	}
	return shellQuote(path)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
