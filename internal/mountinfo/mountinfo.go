// Package mountinfo tells what is mounted at a mount point, and whether
// an hsmfs mount there is dead (its daemon is gone), so that the hsmfs
// commands can clear a dead mount of their own and never touch anyone
// else's.
package mountinfo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	mi "github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// FSType is what /proc/self/mountinfo shows for an hsmfs mount
// (go-fuse mounts as "fuse." + the Name of its options).
const FSType = "fuse.hsmfs"

// State is what stands at a mount point.
type State int

const (
	// NotMounted: nothing is mounted at exactly that path.
	NotMounted State = iota
	// Live: an hsmfs mount whose daemon answers.
	Live
	// Dead: an hsmfs mount whose daemon is gone (ENOTCONN); only this
	// may be cleared.
	Dead
	// Other: a mount of another filesystem type, alive or not.
	Other
)

// Mount is the topmost mount at a path.
type Mount struct {
	Mountpoint, FSType, Source string
	State                      State
}

// Resolve makes p absolute, with symlinks resolved as the kernel shows
// mount points. The last component of a dead mount cannot be stat'ed
// (ENOTCONN), so then only its parent is resolved: a mount point is
// never a symlink itself.
func Resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// At reports the topmost mount at exactly path (already Resolve'd), or
// nil when nothing is mounted there.
func At(path string) (*Mount, error) {
	infos, err := mi.GetMounts(func(i *mi.Info) (skip, stop bool) {
		return i.Mountpoint != path, false
	})
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	top := topmost(infos)
	if top == nil {
		return nil, nil
	}
	m := &Mount{Mountpoint: top.Mountpoint, FSType: top.FSType, Source: top.Source, State: Other}
	if m.FSType == FSType {
		m.State = Live
		if isDead(path) {
			m.State = Dead
		}
	}
	return m, nil
}

// topmost picks, among mounts stacked on one path, the one that no other
// is mounted on: the one a lookup of the path reaches.
func topmost(infos []*mi.Info) *mi.Info {
	under := map[int]bool{}
	for _, i := range infos {
		under[i.Parent] = true
	}
	for _, i := range infos {
		if !under[i.ID] {
			return i
		}
	}
	if len(infos) > 0 {
		return infos[len(infos)-1]
	}
	return nil
}

// isDead: the kernel answers ENOTCONN for a FUSE mount whose daemon
// closed /dev/fuse (it was killed, ran out of memory or panicked), and
// ECONNABORTED once the connection was aborted through
// /sys/fs/fuse/connections; neither can serve again. statfs asks first:
// it always goes to the daemon, while a stat may be answered from the
// attribute cache for a second after the daemon died.
func isDead(path string) bool {
	var sfs unix.Statfs_t
	var st unix.Stat_t
	return notConnected(unix.Statfs(path, &sfs)) || notConnected(unix.Stat(path, &st))
}

func notConnected(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// ClearDead detaches a dead hsmfs mount at path (already Resolve'd). It
// checks again right before, and refuses anything but a dead hsmfs
// mount, so that a live mount of anyone is never cleared.
func ClearDead(path string) error {
	m, err := At(path)
	if err != nil {
		return err
	}
	if m == nil || m.State != Dead {
		return fmt.Errorf("%s: not a dead hsmfs mount", path)
	}
	// MNT_DETACH: programs may still hold the dead mount (a shell's
	// working directory); a plain unmount would fail with EBUSY.
	if os.Geteuid() == 0 {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("clearing the dead mount %s: %w", path, err)
		}
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("clearing the dead mount %s: fusermount3: %s: %w", path, strings.TrimSpace(string(out)), err)
	}
	return nil
}

// Hsmfs lists the hsmfs mounts of this mount namespace whose daemon
// answers (a dead one, whose daemon is gone, holds nothing), each with
// its Source: its BACKING. A mount that does not answer within wait is
// listed as live (its daemon may be busy).
func Hsmfs(wait time.Duration) ([]Mount, error) {
	infos, err := mi.GetMounts(mi.FSTypeFilter(FSType))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	var out []Mount
	for _, i := range infos {
		dead := make(chan bool, 1)
		go func() { dead <- isDead(i.Mountpoint) }()
		select {
		case d := <-dead:
			if d {
				continue
			}
		case <-time.After(wait):
		}
		out = append(out, Mount{Mountpoint: i.Mountpoint, FSType: i.FSType, Source: i.Source, State: Live})
	}
	return out, nil
}
