package outside

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Result is what one walk of BACKING found.
type Result struct {
	// Changed are the paths (relative to BACKING, unsorted, unique) that
	// changed since the old index's W; nil when there was nothing to
	// compare with.
	Changed []string
	// Index is the tree as walked, with W as given to Walk.
	Index *Index
}

// Now is the coarse realtime clock that the kernel stamps ctimes from,
// in unix nanoseconds: a change made after Now returns has a ctime at or
// after it.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		var tv unix.Timeval
		unix.Gettimeofday(&tv)
		return tv.Nano() - 1e9 // the precise clock, a second early
	}
	return ts.Nano()
}

// Walk walks the tree beneath the directory rootFd (which stays open) and
// returns its index, with W = w. With old non-nil, it also lists every
// path that changed since old.W (doc.go says why that is complete); with
// everything, it lists the whole tree, and every path of old if given.
func Walk(rootFd int, w int64, old *Index, everything bool) (*Result, error) {
	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		return nil, fmt.Errorf("walk: %w", err)
	}
	fd, err := unix.Openat(rootFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("walk: %w", err)
	}
	wk := &walker{old: old, dev: st.Dev, dirs: make(map[uint64][]Ent), sem: make(chan struct{}, 4*runtime.GOMAXPROCS(0))}
	if old != nil {
		wk.since = old.W
	}
	wk.wg.Add(1)
	wk.dir(fd, "", st.Ino, st.Ctim.Nano(), everything)
	wk.wg.Wait()
	if wk.err != nil {
		return nil, wk.err
	}
	res := &Result{Index: &Index{W: w, Dev: st.Dev, ID: rand.Uint64() | 1, Root: st.Ino, Dirs: wk.dirs}}
	if everything && old != nil && old.Root != 0 {
		// The old index's inode numbers cannot be compared (another
		// filesystem) or its W trusted (the clock went back), but its
		// names can: every old path is listed too, so that what was
		// removed since is deleted from the copy.
		wk.changed = wk.oldSubtree(wk.changed, "", old.Root, map[uint64]bool{})
	}
	if old != nil || everything {
		res.Changed = wk.changed
		if res.Changed == nil {
			res.Changed = []string{}
		}
	}
	return res, nil
}

// walker walks directories on up to cap(sem) goroutines at once; a
// directory found when none is free is walked by its finder.
type walker struct {
	old   *Index
	dev   uint64 // BACKING's device (numbering, below)
	since int64
	sem   chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex // guards changed, dirs and err
	changed []string
	dirs    map[uint64][]Ent
	err     error
}

type found struct {
	Ent
	ctime int64
}

// dir reads the directory fd (and closes it) at path, compares it with
// the old index, and walks on beneath it. whole: it is new, so everything
// beneath it is listed.
func (wk *walker) dir(fd int, path string, ino uint64, ctime int64, whole bool) {
	defer wk.wg.Done()
	ents, err := readDir(fd, wk.dev)
	if err != nil {
		unix.Close(fd)
		wk.fail(fmt.Errorf("walk %q: %w", path, err))
		return
	}
	out, newDirs := wk.compare(path, ino, ctime, ents, whole)
	plain := make([]Ent, len(ents))
	for i, e := range ents {
		plain[i] = e.Ent
	}
	wk.mu.Lock()
	wk.changed = append(wk.changed, out...)
	wk.dirs[ino] = plain
	wk.mu.Unlock()
	for _, e := range ents {
		if !e.Dir {
			continue
		}
		cfd, err := unix.Openat(fd, e.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue // changed under the walk: its directory's ctime says so
			}
			wk.fail(fmt.Errorf("walk %q: %w", join(path, e.Name), err))
			continue
		}
		wk.wg.Add(1)
		p, sub, ct, w := join(path, e.Name), e.Ino, e.ctime, whole || newDirs[e.Name]
		select {
		case wk.sem <- struct{}{}:
			go func() { defer func() { <-wk.sem }(); wk.dir(cfd, p, sub, ct, w) }()
		default:
			wk.dir(cfd, p, sub, ct, w)
		}
	}
	unix.Close(fd)
}

// compare lists what changed in one directory since the old index, and
// which of its subdirectories are new (listed whole).
func (wk *walker) compare(path string, ino uint64, ctime int64, ents []found, whole bool) ([]string, map[string]bool) {
	var out []string
	if whole {
		if path == "" {
			out = append(out, ".") // everything: the root's own mode too
		}
		for _, e := range ents {
			out = append(out, join(path, e.Name))
		}
		return out, nil
	}
	if wk.old == nil {
		return nil, nil
	}
	for _, e := range ents {
		if !e.Dir && e.ctime >= wk.since {
			out = append(out, join(path, e.Name))
		}
	}
	if ctime < wk.since {
		return out, nil // the same names since the index was taken
	}
	out = append(out, listed(path))
	olds, known := wk.old.Dirs[ino]
	if !known {
		// Made after the index was taken and changed since: every
		// name. A subdirectory that the index does not know either is
		// treated the same way; one that it knows was moved in since,
		// with its entries' names and old ctimes: listed whole.
		var movedIn map[string]bool
		for _, e := range ents {
			out = append(out, join(path, e.Name))
			if _, ok := wk.old.Dirs[e.Ino]; ok && e.Dir {
				if movedIn == nil {
					movedIn = make(map[string]bool)
				}
				movedIn[e.Name] = true
			}
		}
		return out, movedIn
	}
	was := make(map[string][]Ent, len(olds))
	for _, o := range olds {
		was[o.Name] = append(was[o.Name], o)
	}
	now := make(map[string]uint64, len(ents))
	newDirs := make(map[string]bool)
	for _, e := range ents {
		now[e.Name] = e.Ino
		if !hasIno(was[e.Name], e.Ino) {
			out = append(out, join(path, e.Name))
			if e.Dir {
				newDirs[e.Name] = true
			}
		}
	}
	for name, prev := range was {
		cur, ok := now[name]
		for _, o := range prev {
			if ok && o.Ino == cur {
				continue
			}
			out = append(out, join(path, name))
			if o.Dir {
				out = wk.oldSubtree(out, join(path, name), o.Ino, map[uint64]bool{ino: true})
			}
		}
	}
	return out, newDirs
}

// oldSubtree lists everything the old index held beneath the directory
// ino, once named p. above holds the directories on the way down, so that
// an inode number used again in the index makes no cycle; a directory
// that a torn log leaves under two names is listed beneath each.
func (wk *walker) oldSubtree(out []string, p string, ino uint64, above map[uint64]bool) []string {
	if above[ino] {
		return out
	}
	above[ino] = true
	for _, e := range wk.old.Dirs[ino] {
		out = append(out, join(p, e.Name))
		if e.Dir {
			out = wk.oldSubtree(out, join(p, e.Name), e.Ino, above)
		}
	}
	delete(above, ino)
	return out
}

func hasIno(es []Ent, ino uint64) bool {
	for _, e := range es {
		if e.Ino == ino {
			return true
		}
	}
	return false
}

func (wk *walker) fail(err error) {
	wk.mu.Lock()
	if wk.err == nil {
		wk.err = err
	}
	wk.mu.Unlock()
}

// number is the inode number of (dev, ino) as go-fuse's loopback gives it,
// and so as hsmfs's log of names has it: the device of a filesystem
// mounted beneath BACKING is mixed in (which also keeps its numbers apart
// from BACKING's), BACKING's own is not.
func number(dev, rootDev, ino uint64) uint64 {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	return swap(dev) ^ swap(rootDev) ^ ino
}

// readDir lists the directory fd with each entry's inode, type and ctime
// (an lstat each).
func readDir(fd int, rootDev uint64) ([]found, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := make([]found, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed under the walk: the directory's ctime says so
			}
			return nil, err
		}
		out = append(out, found{Ent{Name: n, Ino: number(st.Dev, rootDev, st.Ino), Dir: st.Mode&unix.S_IFMT == unix.S_IFDIR}, st.Ctim.Nano()})
	}
	return out, nil
}

// listed is how the answer names the directory at path: the root as
// ".", which rsync takes for the root's own mode, owner, times and xattrs
// (they set its ctime, like a name made or removed in it).
func listed(path string) string {
	if path == "" {
		return "."
	}
	return path
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
