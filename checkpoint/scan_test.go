package checkpoint

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Both ways of sortedPaths (one sort, or two halves merged) keep each
// path with its own agg.
func TestSortedPaths(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 1<<16 + 17} {
		m := make(map[string]*agg, n)
		for len(m) < n {
			p := fmt.Sprintf("d%d/f%d", rand.IntN(500), rand.IntN(1<<20))
			m[p] = &agg{ino: uint64(len(p))}
		}
		keys, aggs := sortedPaths(m)
		if len(keys) != n || len(aggs) != n {
			t.Fatalf("n=%d: %d keys, %d aggs", n, len(keys), len(aggs))
		}
		if !slices.IsSorted(keys) {
			t.Fatalf("n=%d: keys not sorted", n)
		}
		for i, k := range keys {
			if m[k] != aggs[i] {
				t.Fatalf("n=%d: %q has another path's agg", n, k)
			}
			if i > 0 && keys[i-1] == k {
				t.Fatalf("n=%d: %q twice", n, k)
			}
		}
	}
}
