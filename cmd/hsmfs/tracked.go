package main

import (
	"fmt"
	"time"

	"github.com/hsmfs/hsmfs/internal/lifecycle"
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
				backing, m.Mountpoint, m.Source, lifecycle.SameTreeHint)
		case within(backing, m.Source) || within(m.Source, backing):
			return fmt.Errorf("BACKING %s overlaps %s, which the hsmfs mount at %s tracks: a change through either mount would go around the other's tracker; %s",
				backing, m.Source, m.Mountpoint, lifecycle.SameTreeHint)
		}
	}
	return nil
}
