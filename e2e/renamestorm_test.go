package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRenameStorm: several writers rename files and whole directories,
// often onto names just vacated, exchange directories, make the old names
// again, link, append and remove, all at once, as build tools, package
// managers and mail stores do. Every round the answer must stay within
// lines <= 4 x (tree entries + operations) (the old-name mapping once
// grew with the combinations of renames: 1.5 million lines for 12,000
// operations), and real rsync fed with it must make DEST equal the mount.
// HSMFS_STORM_OPS (per writer and round), HSMFS_STORM_ROUNDS and
// HSMFS_E2E_SEED size and replay it.
func TestRenameStorm(t *testing.T) {
	seed := uint64(envInt(t, "HSMFS_E2E_SEED", 20261129))
	writers, ops, rounds := 4, envInt(t, "HSMFS_STORM_OPS", 500), envInt(t, "HSMFS_STORM_ROUNDS", 3)
	t.Logf("seed %d, %d writers x %d operations x %d rounds", seed, writers, ops, rounds)
	m := mount(t)
	dest := filepath.Join(t.TempDir(), "dest")
	must(t, os.Mkdir(dest, 0o755))
	for round := 1; round <= rounds; round++ {
		var wg sync.WaitGroup
		var done atomic.Int64
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(round*100+w)))
				for i := 0; i < ops; i++ {
					stormOp(m.Mnt, rng)
					done.Add(1)
				}
			}(w)
		}
		wg.Wait()
		waitClosed(t, m.Mnt)
		entries := len(snapshot(t, m.Mnt, snapOpts{})) - 1
		start := time.Now()
		data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes"))
		must(t, err)
		took := time.Since(start)
		list := parsePlain(t, data)
		n := int(done.Load())
		t.Logf("round %d: %d operations, %d entries, answer %d lines in %v", round, n, entries, len(list), took.Round(time.Millisecond))
		if len(list) > 4*(entries+n) {
			t.Errorf("round %d: the answer has %d lines, over 4 x (%d entries + %d operations) = %d",
				round, len(list), entries, n, 4*(entries+n))
		}
		// Every name of a file with several links (until the tracker
		// lists them itself: the recipe has no -H).
		extra := strings.Fields(string(hardlinkNames(m.Mnt, data)))
		rsyncOK(t, rsyncList(t, m.Mnt, dest, append(list, extra...)), list)
		bless(t, m.Mnt)
		if !sameTree(t, fmt.Sprintf("round %d", round), snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
			t.FailNow()
		}
	}
}

// stormNames are few, so that renames land on names just vacated.
var stormNames = []string{"a", "b", "c", "d", "e"}

func stormPath(rng *rand.Rand, depth int) string {
	var parts []string
	for d := rng.IntN(depth) + 1; d > 0; d-- {
		parts = append(parts, stormNames[rng.IntN(len(stormNames))])
	}
	return filepath.Join(parts...)
}

// stormOp makes one random modification; most fail on a name that is
// taken or missing, as they would for a real program.
func stormOp(mnt string, rng *rand.Rand) {
	abs := func(p string) string { return filepath.Join(mnt, p) }
	switch rng.IntN(12) {
	case 0, 1:
		os.WriteFile(abs(stormPath(rng, 4)), []byte(fmt.Sprint(rng.Int())), 0o644)
	case 2:
		if f, err := os.OpenFile(abs(stormPath(rng, 4)), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.WriteString("more\n")
			f.Close()
		}
	case 3:
		os.Mkdir(abs(stormPath(rng, 3)), 0o755)
	case 4, 5, 6: // renames of whatever is there, directories included
		os.Rename(abs(stormPath(rng, 3)), abs(stormPath(rng, 3)))
	case 7:
		unix.Renameat2(unix.AT_FDCWD, abs(stormPath(rng, 2)), unix.AT_FDCWD, abs(stormPath(rng, 2)), unix.RENAME_EXCHANGE)
	case 8:
		os.Link(abs(stormPath(rng, 4)), abs(stormPath(rng, 4)))
	case 9:
		os.Remove(abs(stormPath(rng, 4)))
	case 10:
		if rng.IntN(20) == 0 {
			os.RemoveAll(abs(stormPath(rng, 2)))
		} else {
			os.MkdirAll(abs(stormPath(rng, 4)), 0o755)
		}
	case 11:
		os.Chmod(abs(stormPath(rng, 4)), 0o600)
	}
}
