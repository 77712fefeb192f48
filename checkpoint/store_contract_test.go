package checkpoint_test

import (
	"testing"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/checkpoint/checkpointtest"
)

// TestStoreContract runs the Store contract against the tracker's fake,
// which journal's TestStoreContract runs against the real journal: the
// fake is trusted only as far as both pass.
func TestStoreContract(t *testing.T) {
	for _, async := range []bool{false, true} {
		name := map[bool]string{false: "Store", true: "AsyncStore"}[async]
		t.Run(name, func(t *testing.T) {
			reopens := make(map[checkpoint.Store]func(checkpoint.Store) checkpoint.Store)
			checkpointtest.RunStoreTests(t, checkpointtest.Opener{
				Open: func(t *testing.T) checkpoint.Store {
					s, reopen := checkpoint.NewMemStoreForTest(async)
					reopens[s] = reopen
					return s
				},
				Reopen: func(t *testing.T, s checkpoint.Store) checkpoint.Store {
					n := reopens[s](s)
					reopens[n] = reopens[s]
					return n
				},
			})
		})
	}
}
