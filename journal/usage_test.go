package journal

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// TestOnSync: every sync reaches the hook, with the records it made
// durable, also when one Append needs several transactions.
func TestOnSync(t *testing.T) {
	var mu sync.Mutex
	var calls, records int
	j, err := Open(t.TempDir(), "/backing", Options{OnSync: func(d time.Duration, n int) {
		if d < 0 {
			t.Errorf("OnSync: negative duration %v", d)
		}
		mu.Lock()
		calls++
		records += n
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const n = 60000 // more than one transaction (TestAppendLargerThanATransaction)
	recs := make([]*checkpoint.Record, n)
	for i := range recs {
		recs[i] = rec(1, fmt.Sprintf("some/longer/path/%d", i))
	}
	if err := j.Append(recs); err != nil {
		t.Fatal(err)
	}
	if err := j.SaveState(checkpoint.State{Current: 2}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if uint64(calls) != j.Syncs() {
		t.Errorf("OnSync called %d times, Syncs says %d", calls, j.Syncs())
	}
	if records != n {
		t.Errorf("OnSync reported %d records, want %d", records, n)
	}
}

func TestUsage(t *testing.T) {
	j := openT(t, t.TempDir())
	if err := j.Append([]*checkpoint.Record{rec(1, "a")}); err != nil {
		t.Fatal(err)
	}
	u, err := j.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("usage of a fresh journal: %+v", u)
	if u.Memtables+u.ValueLog+u.Tables+u.Other <= 0 {
		t.Errorf("a journal with a record takes no space: %+v", u)
	}
	if u.Free <= 0 || u.Reserve != DefaultReserveBytes {
		t.Errorf("free %d, reserve %d (want %d)", u.Free, u.Reserve, DefaultReserveBytes)
	}
}
