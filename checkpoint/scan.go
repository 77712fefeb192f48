package checkpoint

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
