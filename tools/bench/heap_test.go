package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
)

var keep [][]byte

// TestHeapSplit: a heap profile of this process, with 8 MiB allocated here
// and kept, puts them on the own side.
func TestHeapSplit(t *testing.T) {
	// Every allocation in the profile, not a sample of them (a sampled
	// 8 MiB was once reported as 7.94 MiB).
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	for i := 0; i < 8; i++ {
		keep = append(keep, make([]byte, 1<<20))
	}
	p := filepath.Join(t.TempDir(), "heap.prof")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fuse, badger, own, err := heapSplit(p)
	if err != nil {
		t.Fatal(err)
	}
	// The packages' own init allocations were made before the rate was
	// set, and one of them is sampled now and then (badger 160 bytes in
	// a CI run): only a little is allowed besides the 8 MiB.
	if own < 8<<20 || fuse > 64<<10 || badger > 64<<10 {
		t.Errorf("heapSplit: own %d, go-fuse %d, badger %d; want own >= 8 MiB and almost nothing else", own, fuse, badger)
	}
	runtime.KeepAlive(keep)
}
