package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"
	"github.com/hsmfs/hsmfs/internal/holders"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/mountinfo"
)

// lockBacking takes BACKING's lock. Where the file system has no flock
// on directories, the check by path is all there is: it says so.
func lockBacking(b *backing.Tree, warn func(string)) error {
	err := b.Lock()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backing.ErrTracked):
		return fmt.Errorf("BACKING %s is tracked already by %s; %s", b.Path(), lockHolder(b), SameTreeHint)
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
		if st := hsmctl.StatusWithin(m.Mountpoint, 2*time.Second); st != nil && st.Pid == pid {
			return fmt.Sprintf("the hsmfs mount at %s (daemon pid %d)", st.Mountpoint, pid)
		}
	}
	return fmt.Sprintf("pid %d", pid)
}

// SameTreeHint is what to do instead of a second tracker.
const SameTreeHint = "one tracker per directory: to let more programs read its changes, give each a consumer of that mount (hsmfs consumer add MOUNTPOINT NAME)"
