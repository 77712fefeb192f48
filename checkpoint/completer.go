package checkpoint

import (
	"sync"
	"time"
)

// completer records the completions of idle intents after a short delay.
type completer struct {
	t     *Tracker
	delay time.Duration

	mu   sync.Mutex // guards list and done
	list []*sharedIntent
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

func (c *completer) add(e *sharedIntent) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		c.complete([]*sharedIntent{e})
		return
	}
	c.list = append(c.list, e)
	select { // under mu: stop closes wake under mu
	case c.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
}

func (c *completer) take() []*sharedIntent {
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
func (c *completer) completeIdle(es []*sharedIntent) time.Duration {
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
			c.complete([]*sharedIntent{e})
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

func (c *completer) complete(es []*sharedIntent) {
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
