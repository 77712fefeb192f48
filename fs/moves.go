package fs

import (
	"slices"
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
// query first calls settle, which waits until every rename listed when it
// was called is in the tree (go-fuse moves the inode right after Rename
// returns, so this is microseconds unless the daemon is starved of CPU).
// Rename adds itself before its token ends, so every rename of the
// drained period is listed or already applied.
//
// A listed rename counts as applied once the child is no longer at its
// old name. The same inode can come back to that name only by a link or
// another rename, and both sweep the list first (the kernel sends them
// only after the rename's reply, so its move is applied by then).
//
// Earlier, each rename held its token in a goroutine until the move; a
// goroutine and its timer per rename cost more than the rename's own
// syscalls on a 2-core machine.
type moves struct {
	mu   sync.Mutex // guards list and seq; go-fuse's inode locks are taken under it (GetChild), never the reverse
	list []move
	seq  uint64 // of the latest add
}

type move struct {
	parent *gofs.Inode
	name   string
	child  *gofs.Inode
	seq    uint64
}

// applied reports whether go-fuse has moved child away from name.
func (m *move) applied() bool { return m.parent.GetChild(m.name) != m.child }

// add lists a rename of child from (parent, name), and drops the renames
// that are applied by now: for serial renames the list holds one. It
// returns the rename's number, for drop.
func (ms *moves) add(parent *gofs.Inode, name string, child *gofs.Inode) uint64 {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.sweepLocked(0)
	ms.seq++
	ms.list = append(ms.list, move{parent: parent, name: name, child: child, seq: ms.seq})
	return ms.seq
}

// drop takes back rename seq, which failed: go-fuse will not apply it.
func (ms *moves) drop(seq uint64) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.list = slices.DeleteFunc(ms.list, func(m move) bool { return m.seq == seq })
}

// sweep drops the renames that are applied.
func (ms *moves) sweep() {
	ms.mu.Lock()
	ms.sweepLocked(0)
	ms.mu.Unlock()
}

// sweepLocked drops the renames that are applied, and those numbered up
// to drop whether applied or not.
func (ms *moves) sweepLocked(drop uint64) {
	keep := ms.list[:0]
	for _, m := range ms.list {
		if m.seq > drop && !m.applied() {
			keep = append(keep, m)
		}
	}
	clear(ms.list[len(keep):])
	ms.list = keep
}

// settleTimeout bounds the wait of one query for go-fuse's moves.
const settleTimeout = time.Second

// settle waits until every rename listed when it was called is applied
// to the tree. After settleTimeout it gives up on them (and reports
// false): a starved daemon must not hold queries forever.
func (ms *moves) settle() bool {
	ms.mu.Lock()
	upto := ms.seq
	ms.mu.Unlock()
	deadline := time.Now().Add(settleTimeout)
	for {
		ms.mu.Lock()
		ms.sweepLocked(0)
		waiting := len(ms.list) > 0 && ms.list[0].seq <= upto // the list is in seq order
		late := waiting && time.Now().After(deadline)
		if late {
			ms.sweepLocked(upto)
		}
		ms.mu.Unlock()
		if !waiting {
			return true
		}
		if late {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
}
