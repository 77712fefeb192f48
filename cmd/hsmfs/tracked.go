package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"

	"github.com/hsmfs/hsmfs/internal/holders"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/mountinfo"
)

// One tracker per directory. A second hsmfs mount of a BACKING that one
// tracks already would record its changes in its own journal, and the
// first one's consumers would never see them (nor would the second's see
// the first's). Two checks refuse it:
//   - before the daemon starts, by path: BACKING must not be, contain or
//     lie beneath the BACKING of a live hsmfs mount, nor lie within an
//     hsmfs mount (whose view it would track a second time);
//   - in the daemon, by inode: an exclusive flock on BACKING's root
//     (backing.Tree.Lock), which no other path, bind mount or journal of
//     that directory escapes, and which the kernel drops when a daemon
//     dies. It covers the directory itself: a bind mount of a directory
//     beneath a tracked BACKING (or above one) is refused only by the
//     check by path, when its path shows the overlap.

// sameTreeHint is what to do instead of a second tracker.
const sameTreeHint = "one tracker per directory: to let more programs read its changes, give each a consumer of that mount (hsmfs consumer add MOUNTPOINT NAME)"

// checkTrackers refuses a BACKING that a live hsmfs mount tracks, or
// that overlaps what one tracks.
func checkTrackers(backing string) error {
	ms, err := mountinfo.Hsmfs(2 * time.Second)
	if err != nil {
		return err
	}
	for _, m := range ms {
		switch {
		case backing == m.Source || within(backing, m.Mountpoint):
			return fmt.Errorf("BACKING %s is tracked already by the hsmfs mount at %s (of %s); %s",
				backing, m.Mountpoint, m.Source, sameTreeHint)
		case within(backing, m.Source) || within(m.Source, backing):
			return fmt.Errorf("BACKING %s overlaps %s, which the hsmfs mount at %s tracks: a change through either mount would go around the other's tracker; %s",
				backing, m.Source, m.Mountpoint, sameTreeHint)
		}
	}
	return nil
}

// lockBacking takes BACKING's lock. Where the file system has no flock
// on directories, the check by path is all there is: it says so.
func lockBacking(b *backing.Tree, warn func(string)) error {
	err := b.Lock()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backing.ErrTracked):
		return fmt.Errorf("BACKING %s is tracked already by %s; %s", b.Path(), lockHolder(b), sameTreeHint)
	}
	warn(fmt.Sprintf("%v: a second hsmfs mount of this directory through another path would not be refused", err))
	return nil
}

// lockHolder names the process that holds BACKING's lock, and its mount
// if it is an hsmfs mount that answers.
func lockHolder(b *backing.Tree) string {
	pid := holders.FlockHolder(b.Dev(), b.Ino())
	if pid == 0 {
		return "another process"
	}
	ms, _ := mountinfo.Hsmfs(2 * time.Second)
	for _, m := range ms {
		if st := statusWithin(m.Mountpoint, 2*time.Second); st != nil && st.Pid == pid {
			return fmt.Sprintf("the hsmfs mount at %s (daemon pid %d)", st.Mountpoint, pid)
		}
	}
	return fmt.Sprintf("pid %d", pid)
}

// statusWithin reads a mount's status, or nil if it cannot within wait
// (another user's mount, a busy daemon).
func statusWithin(mnt string, wait time.Duration) *hsmctl.Status {
	ch := make(chan *hsmctl.Status, 1)
	go func() {
		c, err := hsmctl.Open(mnt, "")
		if err != nil {
			ch <- nil
			return
		}
		st, _, _ := c.Status()
		ch <- st
	}()
	select {
	case st := <-ch:
		return st
	case <-time.After(wait):
		return nil
	}
}
