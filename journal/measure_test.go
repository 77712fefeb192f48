package journal

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// TestMeasureMillion logs how long Append, Scan and DropBefore take on a
// million records. It asserts correctness, never timing.
//
// Figures on the 2-core development VM (go test, no -race): Append 1.5 s
// (1000 Appends of 1000 records, ~520 syncs), Scan 0.35 s, DropBefore
// 0.14 s with DropPrefix. Deleting the same keys in transactions of 10,000
// took 1.6 s, and left tombstones that made a Scan of the then empty
// journal take 0.3 s instead of 15 µs; hence DropPrefix.
func TestMeasureMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement; skipped with -short")
	}
	const (
		total     = 1_000_000
		periods   = 10
		perAppend = 1000
		writers   = 4
	)
	dir := t.TempDir()
	j := openT(t, dir)

	start := time.Now()
	syncs := j.Syncs()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for n := w * perAppend; n < total; n += writers * perAppend {
				recs := make([]*checkpoint.Record, perAppend)
				for i := range recs {
					recs[i] = &checkpoint.Record{
						Period: uint64(1 + (n+i)*periods/total), Run: 1, Op: checkpoint.OpWrite,
						Ino: uint64(n + i), Time: time.Now(), Path: fmt.Sprintf("dir%03d/file%07d", (n+i)%1000, n+i),
					}
				}
				if err := j.Append(recs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	appendDur := time.Since(start)
	t.Logf("Append: %d records in %v (%d Appends of %d from %d goroutines, %d syncs)",
		total, appendDur, total/perAppend, perAppend, writers, j.Syncs()-syncs)

	// Completions for every 10th record, to make Scan merge two key ranges.
	start = time.Now()
	var completeErr error
	n := 0
	err := j.Scan(0, func(r *checkpoint.Record, _ bool) error {
		if r.Seq%10 == 0 {
			n++
			return j.Complete(r.Period, r.Seq)
		}
		return nil
	})
	if err != nil || completeErr != nil {
		t.Fatal(err, completeErr)
	}
	t.Logf("Complete: %d in %v (one unsynced transaction each)", n, time.Since(start))

	start = time.Now()
	count, completed := 0, 0
	lastSeq := uint64(0)
	err = j.Scan(0, func(r *checkpoint.Record, c bool) error {
		count++
		if c {
			completed++
			if r.Seq%10 != 0 {
				return fmt.Errorf("record %d completed", r.Seq)
			}
		}
		lastSeq = r.Seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Scan: %d records, %d completed, in %v", count, completed, time.Since(start))
	if count != total || completed != total/10 {
		t.Errorf("Scan saw %d records, %d completed", count, completed)
	}
	_ = lastSeq

	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Check: %v (%d records, %d completions, %d periods)", time.Since(start), rep.Records, rep.Completions, rep.Periods)
	j = openT(t, dir)

	// One appender keeps going during DropBefore, which makes it wait.
	stop := make(chan struct{})
	appenderDone := make(chan struct{})
	var maxLatency time.Duration
	var appends int
	go func() {
		defer close(appenderDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if err := j.Append([]*checkpoint.Record{{Period: periods + 1, Op: checkpoint.OpCreate, Path: "new"}}); err != nil {
				t.Error(err)
				return
			}
			maxLatency = max(maxLatency, time.Since(t0))
			appends++
		}
	}()
	time.Sleep(20 * time.Millisecond)
	start = time.Now()
	if err := j.DropBefore(periods + 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("DropBefore: %d records and %d completions in %v", total, total/10, time.Since(start))
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-appenderDone
	t.Logf("concurrent appender: %d Appends, slowest %v", appends, maxLatency)

	start = time.Now()
	count = 0
	if err := j.Scan(0, func(*checkpoint.Record, bool) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	t.Logf("Scan after drop: %d records in %v", count, time.Since(start))
	if count != appends {
		t.Errorf("%d records left after DropBefore", count)
	}
}
