package checkpoint

import (
	"strings"
	"sync"
	"time"
)

// Coarse mode.
//
// A serial workload (an untar, a build) cannot share syncs with anyone,
// and a device flush per create would dominate its cost. So, when the
// store can append without a sync, an intent that neither removes nor
// moves a name is recorded as two records:
//
//   - a durable directory intent (OpEntries on the parent directory D):
//     "the entries of D may change in this period", synced once per
//     directory and period (deduplicated like any intent);
//   - the fine record naming the entry, appended without a sync.
//
// Without a crash every fine record is visible to the next query, which
// answers them as usual and ignores the directory intents. After an
// unclean end the fine records of the crashed run may be lost, so a query
// answers each directory intent of that run with D and every entry of D
// as it is now (not recursively: an entry created inside a new
// subdirectory has a directory intent of its own). That is rsync-complete
// because coarse mode never covers a removal: unlink, rmdir and rename
// are always synced fine records with their names, since rsync can delete
// only what is listed.
//
// If the store reports that queued fine records were lost (a failed
// write), the current run's directory intents are answered the same way.

// coarseOp reports which kinds of modification coarse mode may cover.
func coarseOp(op Op) bool {
	switch op {
	case OpUnlink, OpRmdir, OpRename, OpEntries:
		return false
	}
	return true
}

func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// coarsen maps ins one to one onto durable intents, and returns the fine
// intents to append without a sync.
func (t *Tracker) coarsen(ins []Intent) (durable, fine []Intent) {
	durable = make([]Intent, len(ins))
	for i, in := range ins {
		if !coarseOp(in.Op) || in.Path == "" {
			durable[i] = in
			continue
		}
		durable[i] = Intent{Op: OpEntries, Flags: FlagDir, Path: parentDir(in.Path)}
		fine = append(fine, in)
	}
	return durable, fine
}

// queueFine appends the fine records that period p does not have yet.
func (t *Tracker) queueFine(p uint64, fine []Intent) {
	set := t.ps.set(p)
	var recs []*Record
	now := time.Now()
	for _, in := range fine {
		k := dedupKey{op: in.Op, flags: in.Flags, ino: in.Ino, path: in.Path, path2: in.Path2}
		sh := &set.shards[set.shard(&k)]
		sh.mu.Lock()
		if sh.m[k] == nil {
			// The set only needs to know the key: one shared value
			// for every fine record keeps a big period small.
			sh.m[k] = fineEntry
			recs = append(recs, &Record{Period: p, Run: t.run, Op: in.Op, Flags: in.Flags | FlagFine, Ino: in.Ino,
				Time: now, Path: in.Path, Path2: in.Path2})
		}
		sh.mu.Unlock()
	}
	if len(recs) > 0 {
		t.async.AppendAsync(recs)
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// fineEntry stands for every fine record in the dedup sets.
var fineEntry = &entry{ready: closedChan}

// completer records the completions of idle intents after a short delay.
type completer struct {
	t     *Tracker
	delay time.Duration

	mu   sync.Mutex // guards list and done
	list []*entry
	done bool

	wake chan struct{}
	quit chan struct{} // closed by stop: no more waiting
	exit chan struct{}
}

func newCompleter(t *Tracker, delay time.Duration) *completer {
	if delay <= 0 {
		delay = 10 * time.Millisecond
	}
	c := &completer{t: t, delay: delay, wake: make(chan struct{}, 1), quit: make(chan struct{}), exit: make(chan struct{})}
	go c.run()
	return c
}

func (c *completer) add(e *entry) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		c.complete([]*entry{e})
		return
	}
	c.list = append(c.list, e)
	select { // under mu: stop closes wake under mu
	case c.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
}

func (c *completer) take() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.list
	c.list = nil
	return l
}

func (c *completer) run() {
	defer close(c.exit)
	for range c.wake {
		for wait := c.delay; wait > 0; {
			select {
			case <-time.After(wait):
			case <-c.quit:
				return // stop completes what is left
			}
			wait = c.completeIdle(c.take())
		}
	}
}

// holdCurrent is how long an idle intent of the current period waits for
// its completion. Only an intent of the current period can be joined
// again, and joining a completed one costs a synced Reopen: a path
// written again and again (open, write, close in a loop) must keep its
// one intent open, even with pauses, or the repeated writes would cost a
// sync each. Intents of older periods are completed after the short delay.
const holdCurrent = time.Second

// completeIdle completes the entries, in the order they went idle, that
// have been idle long enough, and puts the rest back. It returns how long
// to wait for the next one, or 0 if none is left.
func (c *completer) completeIdle(es []*entry) time.Duration {
	now := time.Now()
	cur := c.t.ps.cur.Load()
	for i, e := range es {
		e.mu.Lock()
		hold := c.delay
		if e.rec.Period == cur {
			hold = max(c.delay, holdCurrent)
		}
		wait := hold - now.Sub(e.idleSince)
		pending := e.refs == 0 && !e.completed && wait > 0
		e.mu.Unlock()
		if !pending {
			c.complete([]*entry{e})
			continue
		}
		// The rest went idle later (roughly): look again when this
		// one is due.
		c.mu.Lock()
		c.list = append(es[i:len(es):len(es)], c.list...)
		c.mu.Unlock()
		return max(wait, c.delay)
	}
	return 0
}

func (c *completer) complete(es []*entry) {
	for _, e := range es {
		e.mu.Lock()
		e.queued = false
		if e.refs == 0 && !e.completed {
			if err := c.t.store.Complete(e.rec.Period, e.rec.Seq); err != nil {
				// Only costs accuracy: the intent is reported in
				// flight after a crash.
				c.t.log.Warn("journal: recording completion failed", "path", e.rec.Path, "err", err)
			} else {
				e.completed = true
			}
		}
		e.mu.Unlock()
	}
}

// stop records every pending completion now and ends the goroutine.
func (c *completer) stop() {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	close(c.wake)
	close(c.quit)
	c.mu.Unlock()
	<-c.exit
	c.complete(c.take())
}

// flush records every pending completion now (tests, clean shutdown).
func (c *completer) flush() { c.complete(c.take()) }
