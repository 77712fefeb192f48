package backing

import (
	"sync"

	"golang.org/x/sys/unix"
)

// dirCache keeps the O_PATH fds of recently used directories of BACKING,
// keyed by their path. Every modification resolves its parent directory
// beneath the root with openat2 first (tree.go says why); a serial
// workload in one directory would otherwise pay an openat2 and a close
// per operation, as much CPU as the operation's own syscall.
//
// An fd names a directory, not a path: a cached fd goes stale when the
// directory at its path changes. Through hsmfs only a rename of a
// directory and a rmdir do that (a file cannot replace a directory, and a
// new directory takes a path that had none, so that nothing was cached
// for it), and both call invalidate after their backing call: it drops
// every entry. An open that began before an invalidate is not cached
// (gen), so an fd resolved before a rename can never be cached after it.
// An operation racing with the rename of its own directory may still use
// the directory under its old name, as it could with an fd of its own:
// the kernel orders the two, not hsmfs. Changes made to BACKING beside
// hsmfs are a documented limit.
//
// Cached fds are reference-counted: an fd dropped by invalidate while an
// operation uses it is closed by the operation's put.
type dirCache struct {
	mu     sync.Mutex // guards everything below; a leaf lock
	byPath map[string]*dirEnt
	byFd   map[int]*dirEnt // every fd handed out and not yet put back
	gen    uint64
}

type dirEnt struct {
	fd      int
	refs    int
	dropped bool // no longer in byPath: closed at the last put
}

// dirCacheMax bounds the cache: a few directories at a time are busy in
// any workload, and each entry holds an fd.
const dirCacheMax = 64

func newDirCache() *dirCache {
	return &dirCache{byPath: make(map[string]*dirEnt), byFd: make(map[int]*dirEnt)}
}

// get returns a cached fd for path and the generation to pass to add if
// there is none.
func (c *dirCache) get(path string) (fd int, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byPath[path]; e != nil {
		e.refs++
		return e.fd, 0, true
	}
	return -1, c.gen, false
}

// add caches fd, just opened for path, unless an invalidate came since
// get gave gen; fd is then the caller's alone. Either way the caller
// gives it back with put.
func (c *dirCache) add(path string, fd int, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.byPath[path] != nil {
		return
	}
	if len(c.byPath) >= dirCacheMax {
		c.dropAllLocked()
	}
	e := &dirEnt{fd: fd, refs: 1}
	c.byPath[path] = e
	c.byFd[fd] = e
}

// put gives back an fd from get or add.
func (c *dirCache) put(fd int) {
	c.mu.Lock()
	e := c.byFd[fd]
	if e == nil {
		c.mu.Unlock()
		unix.Close(fd)
		return
	}
	e.refs--
	closeIt := e.refs == 0 && e.dropped
	if closeIt {
		delete(c.byFd, fd)
	}
	c.mu.Unlock()
	if closeIt {
		unix.Close(fd)
	}
}

// invalidate drops every entry: a directory may have moved or gone.
func (c *dirCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.dropAllLocked()
	c.mu.Unlock()
}

func (c *dirCache) dropAllLocked() {
	for p, e := range c.byPath {
		delete(c.byPath, p)
		e.dropped = true
		if e.refs == 0 {
			delete(c.byFd, e.fd)
			unix.Close(e.fd)
		}
	}
}

// Dir is openDir through the cache: the fd may be shared, so the caller
// gives it back with PutDir and never closes it.
func (b *Tree) Dir(rel string) (int, error) {
	fd, gen, ok := b.dirs.get(rel)
	if ok {
		return fd, nil
	}
	fd, err := b.openDir(rel)
	if err != nil {
		return -1, err
	}
	b.dirs.add(rel, fd, gen)
	return fd, nil
}

// PutDir gives back an fd from Dir or ParentDir.
func (b *Tree) PutDir(fd int) { b.dirs.put(fd) }

// ParentDir opens (or takes from the cache) the parent directory of rel
// and returns it with the final name; give dirfd back with PutDir.
func (b *Tree) ParentDir(rel string) (dirfd int, name string, err error) {
	dir, name := SplitPath(rel)
	if name == "" {
		return -1, "", unix.EINVAL
	}
	dirfd, err = b.Dir(dir)
	return dirfd, name, err
}
