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
	exit chan struct{}
}

func newCompleter(t *Tracker, delay time.Duration) *completer {
	if delay <= 0 {
		delay = 10 * time.Millisecond
	}
	c := &completer{t: t, delay: delay, wake: make(chan struct{}, 1), exit: make(chan struct{})}
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
		time.Sleep(c.delay)
		c.completeIdle(c.take())
	}
}

// completeIdle completes the entries that have been idle for the delay
// and puts the others back: a path modified again and again (open, write,
// close in a loop) keeps its intent open instead of paying a synced
// Reopen each time.
func (c *completer) completeIdle(es []*entry) {
	now := time.Now()
	var later []*entry
	for _, e := range es {
		e.mu.Lock()
		if e.refs == 0 && !e.completed && now.Sub(e.idleSince) < c.delay {
			later = append(later, e)
			e.mu.Unlock()
			continue
		}
		e.mu.Unlock()
		c.complete([]*entry{e})
	}
	if len(later) > 0 {
		c.mu.Lock()
		c.list = append(c.list, later...)
		if !c.done {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
	}
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
	c.mu.Unlock()
	<-c.exit
	c.complete(c.take())
}

// flush records every pending completion now (tests, clean shutdown).
func (c *completer) flush() { c.complete(c.take()) }
