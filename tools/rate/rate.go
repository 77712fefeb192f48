// Package rate measures how many operations a few goroutines complete
// per second: the loop that the bench's intents row and the journal's
// badger reference share. It uses only the standard library.
package rate

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Run has writers goroutines call op(w, i) for i below max/writers each,
// until dur has passed, ctx ends or an op fails. It returns the
// operations per second, how many completed, and the first op's error
// (or ctx's).
func Run(ctx context.Context, writers int, dur time.Duration, max int, op func(w, i int) error) (float64, int64, error) {
	var n atomic.Int64
	var stop atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	per := max / writers
	start := time.Now()
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < per && !stop.Load() && ctx.Err() == nil; i++ {
				if err := op(w, i); err != nil {
					once.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, n.Load(), firstErr
	}
	return float64(n.Load()) / el.Seconds(), n.Load(), ctx.Err()
}
