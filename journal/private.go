package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNotPrivate: another user could write the journal directory, and so
// rewrite the record of what changed.
var ErrNotPrivate = errors.New("the journal directory is not private")

// checkPrivate refuses a journal directory that another user could
// write, and so rewrite the record of what changed: one that group or
// others may write, or that another user owns. chmod would not undo what
// they may have done. It runs before anything in the directory is
// opened.
func checkPrivate(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case ok && int(sys.Uid) != os.Geteuid():
		return fmt.Errorf("journal %s: %w: it belongs to uid %d, and hsmfs runs as uid %d; "+
			"give hsmfs a journal directory of its own (--journal)", dir, ErrNotPrivate, sys.Uid, os.Geteuid())
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("journal %s: %w: its mode %04o lets other users write it, and so rewrite the record of what changed; "+
			"chmod 700 %s (hsmfs makes its own journal directories 0700)", dir, ErrNotPrivate, st.Mode().Perm(), dir)
	}
	return nil
}

// makePrivate keeps the journal to the daemon's user. The daemon runs
// with umask 077, so what badger creates is 0600 and 0700; a directory
// made beforehand (mkdir -m755), or a journal of an older hsmfs, may be
// more open to reading: the directory is made 0700, and every file in it
// 0600 (saying so in the log). checkPrivate has refused what others may
// write.
func makePrivate(dir string, log *slog.Logger) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("journal %s: make it private: %w", dir, err)
		}
		log.Warn("journal directory made private", "was", fmt.Sprintf("%04o", st.Mode().Perm()), "now", "0700")
	}
	return privateFiles(dir, log)
}

// ownedByUs reports whether fi belongs to the process's effective user.
func ownedByUs(fi os.FileInfo) bool {
	sys, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || int(sys.Uid) == os.Geteuid()
}

// privateFiles makes every file of dir 0600.
func privateFiles(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	n := 0
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), fi.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("journal %s: make %s private: %w", dir, e.Name(), err)
		}
		n++
	}
	if n > 0 {
		log.Warn("journal files made private (0600): an older hsmfs left them open to others", "files", n)
	}
	return nil
}

// PrivateFile makes the file p (a companion of the journal: its log,
// tree index or log of names) readable and writable by its owner only,
// if it exists; it reports whether it had to.
func PrivateFile(p string) (bool, error) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
		return false, nil
	}
	if err := os.Chmod(p, fi.Mode().Perm()&0o700); err != nil {
		return false, fmt.Errorf("make %s private: %w", p, err)
	}
	return true, nil
}
