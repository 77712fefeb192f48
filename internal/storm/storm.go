// Package storm is a rename-heavy random workload, as build tools,
// package managers, git checkouts and mail stores make: files and whole
// directories renamed, often onto names just vacated, directories
// exchanged and made again at their old names, hard links, appends and
// removals. The e2e rename-storm test and the benchmark's storm row both
// run it, from any number of goroutines at once. Most calls fail on a
// name that is taken or missing, as they would for a real program; the
// caller counts calls, not successes.
package storm

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// names are few, so that renames land on names just vacated.
var names = []string{"a", "b", "c", "d", "e"}

// Path is a random relative path of 1 to depth components.
func Path(rng *rand.Rand, depth int) string {
	var parts []string
	for d := rng.IntN(depth) + 1; d > 0; d-- {
		parts = append(parts, names[rng.IntN(len(names))])
	}
	return filepath.Join(parts...)
}

// Op makes one random modification beneath root.
func Op(root string, rng *rand.Rand) {
	abs := func(p string) string { return filepath.Join(root, p) }
	switch rng.IntN(12) {
	case 0, 1:
		os.WriteFile(abs(Path(rng, 4)), []byte(fmt.Sprint(rng.Int())), 0o644)
	case 2:
		if f, err := os.OpenFile(abs(Path(rng, 4)), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.WriteString("more\n")
			f.Close()
		}
	case 3:
		os.Mkdir(abs(Path(rng, 3)), 0o755)
	case 4, 5, 6: // renames of whatever is there, directories included
		os.Rename(abs(Path(rng, 3)), abs(Path(rng, 3)))
	case 7:
		unix.Renameat2(unix.AT_FDCWD, abs(Path(rng, 2)), unix.AT_FDCWD, abs(Path(rng, 2)), unix.RENAME_EXCHANGE)
	case 8:
		os.Link(abs(Path(rng, 4)), abs(Path(rng, 4)))
	case 9:
		os.Remove(abs(Path(rng, 4)))
	case 10:
		if rng.IntN(20) == 0 {
			os.RemoveAll(abs(Path(rng, 2)))
		} else {
			os.MkdirAll(abs(Path(rng, 4)), 0o755)
		}
	case 11:
		os.Chmod(abs(Path(rng, 4)), 0o600)
	}
}
