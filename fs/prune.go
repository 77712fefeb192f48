package fs

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// The node budget. go-fuse keeps a node (about 500 bytes of the daemon's
// heap) for every inode that the kernel holds, and the kernel holds an
// inode as long as its dentry is cached: with the day-long cache timeout
// (cache.go), until memory pressure evicts it. Ten million files made
// through the mount kept about 7 GiB in the daemon. So once the kernel
// holds more than Config.MaxNodes, hsmfs asks it to forget the oldest
// nodes, down to 90% of the budget: FUSE_NOTIFY_PRUNE (Linux 6.18) drops
// an inode's unused dentries, and the inode with them (FUSE evicts an
// inode at its last reference), and the kernel then sends FORGET. What is
// in use (an open file, a working directory, a mount point, a directory
// whose children are cached) stays; a forgotten name that is used again
// is looked up again.
//
// On older kernels a file's or symlink's name is invalidated in its
// directory instead (FUSE_NOTIFY_INVAL_ENTRY), which drops the dentry
// too. That unhashes a dentry even while it is in use, so it is not done
// for open files, nor for directories (it would also detach what is
// mounted beneath them): there the budget bounds files and symlinks.
//
// Nothing that hsmfs records depends on a node living: a node is the
// kernel's handle on a name, and every modification names one that the
// kernel holds while the request runs. Pruning changes no answer, only
// how often the kernel asks for a name.
//
// Bookkeeping: every node added gets a slot, queued oldest first; the
// slot outlives the node (the queue holds the node by a weak pointer),
// and OnForget marks it. The nodes held are the slots less the marked
// ones. A pass names the oldest live nodes to the kernel and keeps them
// aside; the next pass drops those that the kernel forgot and puts the
// others (in use) back at the tail. Slots of nodes forgotten for other
// reasons (unlinked, evicted by the kernel) are dropped when a pass meets
// them, and a compaction goes round the whole queue once they outnumber
// the live ones.

// pruneBatch is how many nodes one notification names.
const pruneBatch = 256

// DefaultMaxNodes is the node budget that hsmfs mounts with unless told
// otherwise: about 100 MiB of the daemon's memory.
const DefaultMaxNodes = 200_000

// compactSlack: the queue is compacted once its slots pass twice the live
// nodes and this (overgrown).
const compactSlack = 4096

// pruneSlot is one added node's place in the queue.
type pruneSlot struct {
	node      weak.Pointer[Node]
	forgotten atomic.Bool // OnForget ran
}

// pruner keeps the nodes that the kernel holds near max (0: no budget,
// only a count).
type pruner struct {
	max  int
	root *gofs.Inode
	// mu guards queue, head, named and slots. It is a leaf lock: nothing
	// else is taken, and no notification sent, while it is held.
	mu    sync.Mutex
	queue []*pruneSlot // queue[head:], oldest first
	head  int
	named []*pruneSlot // named to the kernel by the last pass
	slots int          // in queue and named, and in a pass's hands
	// forgotten counts the slots marked forgotten and not dropped yet.
	forgotten atomic.Int64
	// count is the nodes added less those forgotten, without a budget.
	count atomic.Int64
	// kick wakes the passes (non-blocking, 1 buffered).
	kick   chan struct{}
	stop   chan struct{}
	pruned atomic.Uint64 // nodes named in notifications
	// entries: the kernel has no FUSE_NOTIFY_PRUNE; invalidate entries.
	entries atomic.Bool
}

// entryPrune starts new mounts with entries set (tests of older kernels).
var entryPrune atomic.Bool

func newPruner(max int) *pruner {
	p := &pruner{max: max, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	p.entries.Store(entryPrune.Load())
	return p
}

// added gives a node that go-fuse added a slot, and wakes the passes once
// the live nodes pass the budget or the queue needs compacting. Without a
// budget it only counts.
func (p *pruner) added(n *Node) {
	if p.max == 0 {
		p.count.Add(1)
		return
	}
	if p.entries.Load() && n.IsDir() {
		return // never named on such a kernel (mayForget): not counted
	}
	s := &pruneSlot{node: weak.Make(n)}
	n.slot = s
	p.mu.Lock()
	p.queue = append(p.queue, s)
	p.slots++
	slots := p.slots
	p.mu.Unlock()
	live := slots - int(p.forgotten.Load())
	if live > p.max || overgrown(slots, live) {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// forgot marks a node's slot (Node.OnForget).
func (p *pruner) forgot(n *Node) {
	if p.max == 0 {
		p.count.Add(-1)
		return
	}
	if s := n.slot; s != nil && !s.forgotten.Swap(true) {
		p.forgotten.Add(1)
	}
}

// held is how many nodes the kernel holds, as far as the slots know: a
// node that go-fuse made and then dropped for another of the same inode
// (a name looked up while the file is known under another, as a hard
// link, or two lookups at once) counts until a pass meets its slot
// collected; without a budget, for good (the count is approximate).
func (p *pruner) held() int {
	if p.max == 0 {
		return int(p.count.Load())
	}
	p.mu.Lock()
	slots := p.slots
	p.mu.Unlock()
	return slots - int(p.forgotten.Load())
}

// low is where a pass stops naming nodes: 90% of the budget.
func (p *pruner) low() int { return p.max - p.max/10 }

// run makes passes when woken, until stop is closed. The kernel forgets
// asynchronously, so a pass that named nodes is followed by another,
// 50 ms later, which sees what came of them; passes go on while they
// drop or name something. A round of passes is followed by a pause, and
// if the nodes are still over the budget (what was named was in use, or
// its FORGETs came late), by another round a second later: at most about
// one round a second when what is over the budget is in use.
func (p *pruner) run() {
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		for p.pass() {
			if !p.sleep(50 * time.Millisecond) {
				return
			}
		}
		if !p.sleep(100 * time.Millisecond) {
			return
		}
		if p.max > 0 && p.held() > p.max {
			if !p.sleep(900 * time.Millisecond) {
				return
			}
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
}

// sleep waits d, and reports false if stop was closed meanwhile.
func (p *pruner) sleep(d time.Duration) bool {
	select {
	case <-p.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// pass sweeps the nodes named last time, then names the oldest live ones
// until the live nodes would be down to low (or compacts the whole
// queue). It reports whether another pass should follow.
func (p *pruner) pass() bool {
	named, kept := p.sweepNamed()
	if named > 0 && kept == named {
		return false // the kernel kept everything named: in use, or late
	}
	compact := p.needsCompacting()
	// want is how many more to name: the nodes over low, less those
	// named last time and kept (their FORGETs may still come) and those
	// named in this pass. It is counted again at every batch, since the
	// slots of collected nodes drop out of held as the pass meets them.
	want := func(namedNow int) int {
		if p.max == 0 {
			return 0
		}
		return p.held() - p.low() - kept - namedNow
	}
	namedNow, dropped := 0, 0
	for round, seen := p.queued(), 0; seen < round && (compact || want(namedNow) > 0); {
		slots := p.take(pruneBatch)
		if len(slots) == 0 {
			break
		}
		seen += len(slots)
		w := want(namedNow)
		var batch []*Node
		var back []*pruneSlot
		for _, s := range slots {
			n := p.liveNode(s)
			switch {
			case n == nil:
				dropped++
			case w > 0 && p.mayForget(n):
				batch = append(batch, n)
				p.setNamed(s)
				w--
			default:
				back = append(back, s)
			}
		}
		namedNow += len(batch)
		p.putBack(back)
		p.forget(batch)
	}
	return dropped > 0 || namedNow > 0
}

// sweepNamed drops the nodes named last time that the kernel forgot, and
// puts the others back at the tail. It returns how many were named, and
// how many of them were kept.
func (p *pruner) sweepNamed() (named, kept int) {
	p.mu.Lock()
	ss := p.named
	p.named = nil
	p.mu.Unlock()
	var back []*pruneSlot
	for _, s := range ss {
		if p.liveNode(s) != nil {
			back = append(back, s)
		}
	}
	p.putBack(back)
	return len(ss), len(back)
}

// liveNode returns the slot's node, or drops the slot and returns nil if
// the node was forgotten or collected, or is a directory on a kernel
// whose names are invalidated one by one (never named there).
func (p *pruner) liveNode(s *pruneSlot) *Node {
	n := s.node.Value()
	if n != nil && !s.forgotten.Load() && !(p.entries.Load() && n.IsDir()) {
		return n
	}
	p.mu.Lock()
	p.slots--
	p.mu.Unlock()
	// Whoever sets the flag first counts: OnForget (which then counted
	// the slot forgotten, undone here) or this drop (after which
	// OnForget counts nothing).
	if s.forgotten.Swap(true) {
		p.forgotten.Add(-1)
	}
	return nil
}

// mayForget: n may be named to the kernel. Invalidating entries (older
// kernels) unhashes a dentry even in use: not for open files, nor for
// directories.
func (p *pruner) mayForget(n *Node) bool {
	return !p.entries.Load() || !n.IsDir() && n.opens.Load() == 0
}

func (p *pruner) needsCompacting() bool {
	p.mu.Lock()
	slots := p.slots
	p.mu.Unlock()
	return overgrown(slots, slots-int(p.forgotten.Load()))
}

// overgrown: the queue's slots outnumber its live nodes enough to be
// compacted.
func overgrown(slots, live int) bool { return slots > 2*live+compactSlack }

// counts is the nodes held and how many times one was named to the
// kernel (status and metrics).
func (p *pruner) counts() (held int, pruned uint64) { return p.held(), p.pruned.Load() }

func (p *pruner) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) - p.head
}

func (p *pruner) setNamed(s *pruneSlot) {
	p.mu.Lock()
	p.named = append(p.named, s)
	p.mu.Unlock()
}

func (p *pruner) putBack(ss []*pruneSlot) {
	if len(ss) == 0 {
		return
	}
	p.mu.Lock()
	p.queue = append(p.queue, ss...)
	p.mu.Unlock()
}

// take removes up to k slots from the head.
func (p *pruner) take(k int) []*pruneSlot {
	p.mu.Lock()
	defer p.mu.Unlock()
	k = min(k, len(p.queue)-p.head)
	ss := make([]*pruneSlot, k)
	copy(ss, p.queue[p.head:p.head+k])
	clear(p.queue[p.head : p.head+k])
	p.head += k
	if p.head > len(p.queue)/2 {
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue = p.queue[:n]
		p.head = 0
	}
	return ss
}

// forget asks the kernel to forget nodes (those it does not use).
func (p *pruner) forget(nodes []*Node) {
	if len(nodes) == 0 {
		return
	}
	p.pruned.Add(uint64(len(nodes)))
	if !p.entries.Load() {
		ins := make([]*gofs.Inode, len(nodes))
		for i, n := range nodes {
			ins[i] = n.EmbeddedInode()
		}
		if p.root.NotifyPrune(ins) != syscall.ENOSYS {
			return
		}
		p.entries.Store(true)
	}
	for _, n := range nodes {
		if name, parent := n.Parent(); parent != nil && p.mayForget(n) {
			parent.NotifyEntry(name)
		}
	}
}
