package checkpoint

import (
	"fmt"
	"strings"
	"testing"
)

// TestOldNamesDownAChainOf30: a directory moved down a chain of 30
// directories, each of which was renamed in the period (and its old name
// made again as a directory, so that every level has old names to
// list). The answer must grow with the tree, not with the combinations
// of the levels' names: the path rule took 2^depth aliases per level
// here. Run at depths 10, 20 and 30: the lines per entry must not grow
// with the depth, and the copy must be exact.
func TestOldNamesDownAChainOf30(t *testing.T) {
	perEntry := map[int]float64{}
	for _, depth := range []int{10, 20, 30} {
		w := newOldNamesWorld(t)
		chain := make([]string, depth) // the chain's directories, by their names now
		p := ""
		for i := range depth {
			p = strings.TrimPrefix(p+"/c"+fmt.Sprint(i), "/")
			chain[i] = p
			w.mkdir(p)
			w.write(p + "/f")
		}
		w.mkdir("m")
		for i := range 5 {
			w.write(fmt.Sprintf("m/f%d", i))
		}
		w.round()
		w.ops = 0
		// Move m down the chain, one level at a time, its old name made
		// again each time.
		cur := "m"
		for i := range depth {
			next := chain[i] + "/m"
			w.rename(cur, next)
			w.mkdir(cur)
			cur = next
		}
		// Then rename every level, bottom up (the records of the deeper
		// levels name the upper ones by their old names), and make each
		// old name a directory again with a file in it.
		for i := depth - 1; i >= 0; i-- {
			old := chain[i]
			renamed := strings.TrimPrefix(parentOf(old)+"/r"+fmt.Sprint(i), "/")
			w.rename(old, renamed)
			w.mkdir(old)
			w.write(old + "/g")
		}
		w.f.back.mu.Lock()
		entries := len(w.f.back.cur)
		w.f.back.mu.Unlock()
		n := w.round() // copies, blesses and checks DEST == BACKING
		if n > 4*(entries+w.ops) {
			t.Errorf("depth %d: %d lines, over 4 x (%d entries + %d operations)", depth, n, entries, w.ops)
		}
		if fb := w.f.tr.OldNameFallbacks(); fb != 0 {
			t.Errorf("depth %d: %d queries took the path rule", depth, fb)
		}
		perEntry[depth] = float64(n) / float64(entries+w.ops)
		t.Logf("depth %d: %d lines, %d entries, %d operations", depth, n, entries, w.ops)
	}
	if perEntry[30] > 1.5*perEntry[10] {
		t.Errorf("lines per (entry + operation) grow with the depth: %.2f at 10, %.2f at 30", perEntry[10], perEntry[30])
	}
}
