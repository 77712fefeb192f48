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

// The deep storm moves directories beneath any directory, at any depth,
// the way a build or a package manager moves a staging tree into a deep
// destination: the tree grows deep (30 levels and more), and directories
// move beneath one another again and again. Names come from a larger set
// so that a directory can hold many.
var deepNames = []string{"a", "b", "c", "d", "e", "f", "g", "h", "src", "lib", "out", "tmp"}

// randomDir descends from root through random subdirectories, stopping
// at each level with probability 1/stop (or where there is none): a
// random existing directory, deep ones as likely as the tree makes them.
func randomDir(root string, rng *rand.Rand, stop int) string {
	rel := ""
	for depth := 0; depth < 200; depth++ {
		if rng.IntN(stop) == 0 {
			break
		}
		ents, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			break
		}
		var dirs []string
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			}
		}
		if len(dirs) == 0 {
			break
		}
		rel = filepath.Join(rel, dirs[rng.IntN(len(dirs))])
	}
	return rel
}

// deepPath is a random name in a random existing directory.
func deepPath(root string, rng *rand.Rand) string {
	return filepath.Join(randomDir(root, rng, 6), deepNames[rng.IntN(len(deepNames))])
}

// DeepOp makes one random modification beneath root, of the deep storm.
// Files and directories are made more often than removed, so that the
// tree grows as it deepens.
func DeepOp(root string, rng *rand.Rand) {
	abs := func(p string) string { return filepath.Join(root, p) }
	switch rng.IntN(16) {
	case 0, 1, 2:
		os.WriteFile(abs(deepPath(root, rng)), []byte(fmt.Sprint(rng.Int())), 0o644)
	case 3:
		if f, err := os.OpenFile(abs(deepPath(root, rng)), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.WriteString("more\n")
			f.Close()
		}
	case 4, 5, 6:
		os.Mkdir(abs(deepPath(root, rng)), 0o755)
	case 7, 8, 9, 10:
		// A directory moved beneath another one, at any depth (a move
		// into itself fails, as it would for a program).
		os.Rename(abs(randomDir(root, rng, 4)), abs(deepPath(root, rng)))
	case 11, 12:
		// Renamed away, its name taken at once by a new directory or
		// another one.
		from := randomDir(root, rng, 4)
		if from == "" {
			return
		}
		if os.Rename(abs(from), abs(deepPath(root, rng))) == nil {
			if rng.IntN(2) == 0 {
				os.Mkdir(abs(from), 0o755)
			} else {
				os.Rename(abs(randomDir(root, rng, 3)), abs(from))
			}
		}
	case 13:
		os.Link(abs(deepPath(root, rng)), abs(deepPath(root, rng)))
	case 14:
		if rng.IntN(40) == 0 {
			if d := randomDir(root, rng, 8); d != "" { // never the root itself
				os.RemoveAll(abs(d))
			}
		} else {
			os.Remove(abs(deepPath(root, rng)))
		}
	case 15:
		unix.Renameat2(unix.AT_FDCWD, abs(randomDir(root, rng, 3)), unix.AT_FDCWD, abs(randomDir(root, rng, 3)), unix.RENAME_EXCHANGE)
	}
}
