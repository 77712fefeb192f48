package checkpoint

import (
	"fmt"
	"maps"
	"math/rand"
	"testing"
)

// TestAliasesOfRemembersTooMany: aliasesOf gives the same answer after
// other names' searches (which remember the names whose aliases were too
// many) as on a rule that searched nothing before, for random renames
// (exchanges too) among short names at three depths, with a budget small
// enough that many searches pass it.
func TestAliasesOfRemembersTooMany(t *testing.T) {
	compared, failed := 0, 0
	for seed := int64(1); seed <= 400; seed++ {
		rng := rand.New(rand.NewSource(seed))
		name := func() string { return fmt.Sprintf("n%d", rng.Intn(3)) }
		path := func() string {
			p := name()
			for range rng.Intn(3) {
				p += "/" + name()
			}
			return p
		}
		var renames []*Record
		for range 1 + rng.Intn(15) {
			r := &Record{Op: OpRename, Flags: FlagDir, Path: path(), Path2: path()}
			if rng.Intn(5) == 0 {
				r.Flags |= FlagExchange
			}
			if !movesNothing(r) {
				renames = append(renames, r)
			}
		}
		var keys []string
		for range 10 {
			keys = append(keys, path()+"/f")
		}
		rule := func() *oldNameRule { return newOldNameRule(renames, keys, func(string) bool { return true }) }
		shared := rule()
		for range 30 {
			x := path()
			got, okGot := shared.aliasesOf(x)
			want, okWant := rule().aliasesOf(x)
			compared++
			if okGot != okWant || !maps.Equal(got, want) {
				t.Fatalf("seed %d: aliases of %s after other searches: %v %v; alone: %v %v; moves %v",
					seed, x, okGot, got, okWant, want, shared.moves)
			}
			if !okWant {
				failed++
			}
		}
	}
	t.Logf("%d searches compared, %d of them too many", compared, failed)
	if failed < 100 || failed > compared-100 {
		t.Errorf("%d of %d searches were too many: the test does not exercise both outcomes", failed, compared)
	}
}
