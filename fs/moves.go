package fs

import (
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// moves lists the renames that are done in BACKING but that go-fuse has
// not applied to its tree yet: it moves the inode only after Rename has
// returned. Until then a path taken from the tree (the path of a file open
// for writing) is the old one.
//
// A query drains its period and then takes the paths of the files open
// for writing (checkpoint: rerecordHandles). A rename that ended in the
// drained period must be visible in the tree by then, or an open file it
// moved would be re-recorded under its old name only, and a write after
// the query would be listed under a name that no longer exists. So the
// query first calls settle, which waits (100 ms at most, as go-fuse moves
// the inode right after Rename returns) until every listed rename is in
// the tree. Rename adds itself before its token ends, so every rename of
// the drained period is listed or already applied.
//
// Earlier, each rename held its token in a goroutine until the move; a
// goroutine and its timer per rename cost more than the rename's own
// syscalls on a 2-core machine.
type moves struct {
	mu   sync.Mutex // guards list; go-fuse's inode locks are taken under it (GetChild), never the reverse
	list []move
}

type move struct {
	parent *gofs.Inode
	name   string
	child  *gofs.Inode
}

// applied reports whether go-fuse has moved child away from name.
func (m *move) applied() bool { return m.parent.GetChild(m.name) != m.child }

// add lists a rename of child from (parent, name), and drops the renames
// that are applied by now: for serial renames the list holds one.
func (ms *moves) add(parent *gofs.Inode, name string, child *gofs.Inode) {
	ms.mu.Lock()
	ms.sweepLocked()
	ms.list = append(ms.list, move{parent: parent, name: name, child: child})
	ms.mu.Unlock()
}

func (ms *moves) sweepLocked() int {
	keep := ms.list[:0]
	for _, m := range ms.list {
		if !m.applied() {
			keep = append(keep, m)
		}
	}
	clear(ms.list[len(keep):])
	ms.list = keep
	return len(keep)
}

// settle waits until every listed rename is applied to the tree.
func (ms *moves) settle() {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		ms.mu.Lock()
		n := ms.sweepLocked()
		if n > 0 && time.Now().After(deadline) {
			// Not applied in 100 ms: go-fuse did not move the
			// inode (the kernel forgot it meanwhile). Waiting longer
			// would not help.
			clear(ms.list)
			ms.list = ms.list[:0]
			n = 0
		}
		ms.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}
