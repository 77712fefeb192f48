package journal

import (
	"testing"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/checkpoint/checkpointtest"
)

// TestStoreContract runs the Store contract, which the tracker's tests
// check against their fake, against the real journal: a reopen is a
// Close and an Open of the same directory, as a remount does.
func TestStoreContract(t *testing.T) {
	checkpointtest.RunStoreTests(t, checkpointtest.Opener{
		Open: func(t *testing.T) checkpoint.Store { return openT(t, t.TempDir()) },
		Reopen: func(t *testing.T, s checkpoint.Store) checkpoint.Store {
			j := s.(*Journal)
			if err := j.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openT(t, j.Dir())
		},
	})
}
