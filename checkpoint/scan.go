package checkpoint

import (
	"slices"
	"strings"
	"sync"
)

// scanAside runs the store's Scan and hands every record to fn on a
// second goroutine, in order, in batches: on a million records badger's
// iteration and the query's aggregation run on two cores at once. fn is
// never called concurrently with itself; every call has returned when
// scanAside returns. stop is asked at every batch; once it says true, the
// scan ends with ErrAbandoned.
func scanAside(s Store, from uint64, stop func() bool, fn func(r *Record, completed bool)) error {
	type scanned struct {
		r         *Record
		completed bool
	}
	const batchLen = 4096
	batches := make(chan []scanned, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range batches {
			for _, s := range b {
				fn(s.r, s.completed)
			}
		}
	}()
	batch := make([]scanned, 0, batchLen)
	err := s.Scan(from, func(r *Record, completed bool) error {
		batch = append(batch, scanned{r, completed})
		if len(batch) == batchLen {
			batches <- batch
			batch = make([]scanned, 0, batchLen)
			if stop() {
				return ErrAbandoned
			}
		}
		return nil
	})
	if len(batch) > 0 {
		batches <- batch
	}
	close(batches)
	<-done
	return err
}

// sortedPaths returns m's keys sorted bytewise and their aggs in the same
// order: the query then never looks a path up again. A large map is
// sorted in two halves at once and merged.
func sortedPaths(m map[string]*agg) ([]string, []*agg) {
	type pa struct {
		p string
		a *agg
	}
	pairs := make([]pa, 0, len(m))
	for k, a := range m {
		pairs = append(pairs, pa{k, a})
	}
	cmp := func(x, y pa) int { return strings.Compare(x.p, y.p) }
	keys, aggs := make([]string, len(pairs)), make([]*agg, len(pairs))
	if len(pairs) < 1<<16 {
		slices.SortFunc(pairs, cmp)
		for i := range pairs {
			keys[i], aggs[i] = pairs[i].p, pairs[i].a
		}
		return keys, aggs
	}
	lo, hi := pairs[:len(pairs)/2], pairs[len(pairs)/2:]
	var wg sync.WaitGroup
	wg.Go(func() { slices.SortFunc(lo, cmp) })
	slices.SortFunc(hi, cmp)
	wg.Wait()
	// Map keys are unique: no ties to order.
	for i := range keys {
		var x pa
		if len(hi) == 0 || (len(lo) > 0 && lo[0].p < hi[0].p) {
			x, lo = lo[0], lo[1:]
		} else {
			x, hi = hi[0], hi[1:]
		}
		keys[i], aggs[i] = x.p, x.a
	}
	return keys, aggs
}
