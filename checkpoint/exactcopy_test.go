package checkpoint

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A concurrent consumer keeps an exact copy.

func TestConcurrentConsumerKeepsExactCopy(t *testing.T) {
	for _, coarse := range []bool{false, true} {
		t.Run(fmt.Sprintf("coarse=%v", coarse), func(t *testing.T) {
			concurrentConsumer(t, memStoreOpts{async: coarse, flushOnSync: coarse})
		})
	}
}

func concurrentConsumer(t *testing.T, opts memStoreOpts) {
	f := newFixture(t, opts)
	// Completions recorded at once (the completer is stopped).
	f.tr.comp.stop()
	const nPaths = 16
	var vers [nPaths]atomic.Uint64
	name := func(i int) string { return fmt.Sprintf("d%d/f%02d", i%4, i) }
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for !stop.Load() {
				i := r.IntN(nPaths)
				if r.IntN(4) == 0 {
					h, err := f.tr.OpenWrite(staticPath(name(i)), uint64(i))
					if err != nil {
						t.Error(err)
						return
					}
					for k := 0; k < 3; k++ {
						if r.IntN(2) == 0 {
							if err := h.Touch(); err != nil {
								t.Error(err)
							}
						}
						vers[i].Add(1) // Touch or not (mmap)
						time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
					}
					h.Release()
					continue
				}
				tok, err := f.tr.Begin(Intent{Op: OpWrite, Path: name(i)})
				if err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
				vers[i].Add(1)
				tok.End()
			}
		}(w)
	}
	var dest [nPaths]uint64
	round := func() {
		a := f.query()
		for _, e := range a.Entries {
			var i int
			var d int
			fmt.Sscanf(e.Path, "d%d/f%02d", &d, &i)
			dest[i] = vers[i].Load()
		}
		f.bless(a.Query)
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	rounds := 0
	for time.Now().Before(deadline) {
		round()
		rounds++
		if st := f.status(); st.InFlight < 0 {
			t.Fatalf("negative in flight: %+v", st)
		}
	}
	stop.Store(true)
	wg.Wait()
	round()
	for i := range dest {
		if dest[i] != vers[i].Load() {
			t.Errorf("%s: DEST has version %d, the source %d", name(i), dest[i], vers[i].Load())
		}
	}
	if st := f.status(); st.InFlight != 0 || st.OpenForWrite != 0 {
		t.Fatalf("status at the end: %+v", st)
	}
	t.Logf("%d consumer rounds", rounds)
}

// ---------------------------------------------------------------------
// Coarse mode (the store implements AsyncStore)
