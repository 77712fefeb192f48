package backing

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// Tree is BACKING, reached only through its root directory fd. Every
// path is resolved beneath it with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a symlink in BACKING can never lead hsmfs
// outside of it, and the final component is acted on with *at calls and
// AT_SYMLINK_NOFOLLOW / O_NOFOLLOW.
type Tree struct {
	path   string // absolute, for messages and for lxattr on the root only
	rootFd int    // O_RDONLY|O_DIRECTORY, open for the life of the mount
	dev    uint64
	dirs   *dirCache // fds of the parent directories of modifications (dircache.go)
	// rootIno is the root directory's inode in BACKING (go-fuse numbers
	// the root 1).
	rootIno uint64
	// afterSync, if set, runs after every successful Syncfs (SetAfterSync).
	afterSync func() error
}

// SetAfterSync makes fn part of Syncfs, which every bless calls before
// it discards anything: what fn makes durable is then durable before any
// bless. Set it before the mount.
func (b *Tree) SetAfterSync(fn func() error) { b.afterSync = fn }

// The optional methods that the tracker's queries use.
var (
	_ checkpoint.Backing      = (*Tree)(nil)
	_ checkpoint.BatchLstater = (*Tree)(nil)
	_ checkpoint.Lister       = (*Tree)(nil)
	_ checkpoint.TypedLister  = (*Tree)(nil)
	_ checkpoint.InodeWalker  = (*Tree)(nil)
	_ checkpoint.DirWalker    = (*Tree)(nil)
)

// Open opens BACKING and checks that it can be tracked.
func Open(path string) (*Tree, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("backing %q: %w", path, err)
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("backing %q is not a directory: %w", abs, err)
		}
		return nil, fmt.Errorf("backing %q: %w", abs, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("backing %q: %w", abs, err)
	}
	if err := unix.Fstatat(fd, hsmctl.Dir, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		unix.Close(fd)
		return nil, fmt.Errorf("backing %q has an entry named %s at its root, which hsmfs reserves for its control directory; rename it first: %w", abs, hsmctl.Dir, unix.EEXIST)
	}
	var rst unix.Stat_t
	unix.Fstat(fd, &rst)
	return &Tree{path: abs, rootFd: fd, dev: rst.Dev, rootIno: rst.Ino, dirs: newDirCache()}, nil
}

// ErrTracked: another hsmfs holds BACKING's lock (Lock).
var ErrTracked = errors.New("BACKING is tracked by another hsmfs")

// Lock takes an exclusive flock on BACKING's root directory for the
// life of the Backing: one tracker per directory. A second tracker would
// record its changes in its own journal, and the first one's consumers
// would never see them. flock locks the inode, whatever path, bind mount
// or journal reached it, and the kernel drops it when the daemon dies,
// so a crash leaves no stale lock. It fails with ErrTracked while
// another process holds it, and with the file system's errno where
// flock is not supported on directories (some network file systems).
func (b *Tree) Lock() error {
	err := unix.Flock(b.rootFd, unix.LOCK_EX|unix.LOCK_NB)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return ErrTracked
	}
	return fmt.Errorf("lock BACKING %s: %w", b.path, err)
}

// Ino is the inode of BACKING's root directory.
func (b *Tree) Ino() uint64 { return b.rootIno }

// Path is the absolute path of BACKING.
func (b *Tree) Path() string { return b.path }

// RootFd is BACKING's root directory, open for the life of the Backing
// (for a walk of the whole tree; do not close it).
func (b *Tree) RootFd() int { return b.rootFd }

// Dev is the device of BACKING's filesystem (the directory itself, not a
// mount over it: it was opened before).
func (b *Tree) Dev() uint64 { return b.dev }

// FdPath reaches BACKING through its root fd for path-based calls (go-fuse's
// loopback): with an in-place mount, BACKING's own path leads into the
// mount.
func (b *Tree) FdPath() string { return ProcFd(b.rootFd) }

// ProcFd is the /proc path of fd: it names the inode itself, also for an
// O_PATH fd, which path-based calls (chmod, getxattr) then act on.
func ProcFd(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// InvalidateDirs drops every cached directory fd: call it after every
// rename of a directory and every rmdir (dircache.go says why).
func (b *Tree) InvalidateDirs() { b.dirs.invalidate() }

// Close releases the root fd.
func (b *Tree) Close() error {
	b.dirs.invalidate() // closes the cached fds; those in use close at their put
	return unix.Close(b.rootFd)
}

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openDir opens the directory rel (relative to BACKING, "" for the root)
// as an O_PATH fd. Long paths are walked in pieces so that they are not
// limited by PATH_MAX.
func (b *Tree) openDir(rel string) (int, error) {
	return b.OpenBeneath(rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// OpenBeneath opens rel beneath the root with flags. Every component but
// the last must be a real directory; with O_NOFOLLOW|O_PATH the last may
// be a symlink, which is then opened itself. A path longer than one
// openat2 accepts is walked in pieces, each resolved from the directory
// fd that the previous piece gave, so no depth is too deep.
func (b *Tree) OpenBeneath(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	dirfd := b.rootFd
	closeDir := func() {
		if dirfd != b.rootFd {
			unix.Close(dirfd)
		}
	}
	defer func() { closeDir() }()
	for len(rel) > walkChunk {
		cut := strings.LastIndexByte(rel[:walkChunk], '/')
		if cut <= 0 {
			return -1, unix.ENAMETOOLONG // one name over walkChunk bytes
		}
		fd, err := openat2(dirfd, rel[:cut], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		closeDir()
		dirfd, rel = fd, rel[cut+1:]
	}
	return openat2(dirfd, rel, flags, mode)
}

// walkChunk is the longest piece of a path that OpenBeneath hands to one
// openat2: below PATH_MAX (4096), and far above NAME_MAX (255).
const walkChunk = 3000

// openat2 resolves rel beneath dirfd. openat2 says EAGAIN when a
// concurrent rename raced the lookup under RESOLVE_BENEATH; the man page
// suggests retrying, from the same directory.
func openat2(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dirfd, rel, how)
		if err != unix.EAGAIN || try == 8 {
			return fd, err
		}
	}
}

// SplitPath splits rel into its parent directory ("" for the root) and
// its final name.
func SplitPath(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// JoinPath is the path of name in dir ("" for the root).
func JoinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// ProcPath names (dirfd, name) for the l*xattr calls, which have no *at
// form: the magic link of dirfd is followed, the final name is not.
func ProcPath(dirfd int, name string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
}

// Syncfs makes BACKING's filesystem durable.
func (b *Tree) Syncfs() error {
	if err := unix.Syncfs(b.rootFd); err != nil {
		return fmt.Errorf("syncfs %s: %w", b.path, err)
	}
	if b.afterSync != nil {
		return b.afterSync()
	}
	return nil
}

// InodesUsed is how many inodes BACKING's file system holds (statfs), 0
// if it does not say (btrfs counts none): checkpoint's measure of the
// tree for the answers' bound.
func (b *Tree) InodesUsed() uint64 {
	var st unix.Statfs_t
	if unix.Fstatfs(b.rootFd, &st) != nil || st.Files == 0 || st.Ffree > st.Files {
		return 0
	}
	return st.Files - st.Ffree
}

// Lstat reports the type, inode and link count of rel as it is now:
// TypeGone if it does not exist, TypeShadowed if it cannot exist because an ancestor
// is not a directory any more.
func (b *Tree) Lstat(rel string) (checkpoint.FileType, uint64, uint32) {
	var st unix.Stat_t
	return b.statResult(b.fstatat(rel, &st), &st)
}

// ino is the inode number of st as the mount numbers it (fs.Node.idFromStat):
// st_ino itself on BACKING's own file system, mixed with the device
// beneath a mount point inside it. Records name inodes by their nodes, and
// the query compares them with what it finds here.
func (b *Tree) ino(st *unix.Stat_t) uint64 {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	return swap(st.Dev) ^ swap(b.dev) ^ st.Ino
}

// statResult turns an lstat into Lstat's answer.
func (b *Tree) statResult(err error, st *unix.Stat_t) (checkpoint.FileType, uint64, uint32) {
	switch {
	case err == nil:
		return fileType(st.Mode), b.ino(st), uint32(st.Nlink)
	case notBeneath(err):
		return checkpoint.TypeShadowed, 0, 0
	}
	return checkpoint.TypeGone, 0, 0
}

// notBeneath: the path cannot exist because an ancestor is not a
// directory (any more), or is a symlink that hsmfs will not follow.
func notBeneath(err error) bool {
	return errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV)
}

// LstatSorted is Lstat of many paths, sorted so that siblings are
// neighbours: each parent directory is opened once per chunk. The chunks
// run in parallel (a million fstatat calls are most of a big query). A
// path that need rejects is not stat'ed: its parent's open tells whether
// it is shadowed or gone (checkpoint.BatchLstater).
func (b *Tree) LstatSorted(paths []string, need func(i int) bool, fn func(i int, typ checkpoint.FileType, ino uint64, nlink uint32)) {
	workers := min(runtime.NumCPU(), 4)
	if len(paths) < 10000 {
		workers = 1
	}
	var wg sync.WaitGroup
	chunk := (len(paths) + workers - 1) / max(workers, 1)
	for lo := 0; lo < len(paths); lo += chunk {
		hi := min(lo+chunk, len(paths))
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			b.lstatRange(paths, lo, hi, need, fn)
		}(lo, hi)
	}
	wg.Wait()
}

func (b *Tree) lstatRange(paths []string, lo, hi int, need func(i int) bool, fn func(i int, typ checkpoint.FileType, ino uint64, nlink uint32)) {
	curDir, curFd, curErr := "\x00", -1, error(nil)
	defer func() {
		if curFd >= 0 {
			unix.Close(curFd)
		}
	}()
	for i := lo; i < hi; i++ {
		rel := paths[i]
		if rel == "" {
			typ, ino, nlink := b.Lstat(rel)
			fn(i, typ, ino, nlink)
			continue
		}
		dir, name := SplitPath(rel)
		if dir != curDir {
			if curFd >= 0 {
				unix.Close(curFd)
			}
			curDir = dir
			curFd, curErr = b.openDir(dir)
			if curErr != nil {
				curFd = -1
			}
		}
		if curErr == nil && !need(i) {
			// The parent is a directory beneath the root: the path
			// is not shadowed.
			fn(i, checkpoint.TypeUnstated, 0, 0)
			continue
		}
		var st unix.Stat_t
		err := curErr
		if err == nil {
			err = unix.Fstatat(curFd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		typ, ino, nlink := b.statResult(err, &st)
		fn(i, typ, ino, nlink)
	}
}

func (b *Tree) fstatat(rel string, st *unix.Stat_t) error {
	if rel == "" {
		return unix.Fstat(b.rootFd, st)
	}
	dirfd, name, err := b.ParentDir(rel)
	if err != nil {
		return err
	}
	defer b.PutDir(dirfd)
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

func fileType(mode uint32) checkpoint.FileType {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return checkpoint.TypeFile
	case unix.S_IFDIR:
		return checkpoint.TypeDir
	case unix.S_IFLNK:
		return checkpoint.TypeSymlink
	}
	return checkpoint.TypeOther
}

// Walk calls fn for every path strictly beneath dir. A dir that is gone
// or not a directory any more has nothing beneath it.
func (b *Tree) Walk(dir string, fn func(string)) error {
	fd, err := b.OpenBeneath(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || notBeneath(err) {
			return nil
		}
		return fmt.Errorf("walk %q: %w", dir, err)
	}
	return walkFd(fd, dir, fn)
}

// WalkDirs is Walk that also gives the inode of every directory
// (checkpoint.DirWalker): one stat per directory; entries that are not
// directories cost nothing more.
func (b *Tree) WalkDirs(dir string, fn func(path string, ino uint64, isDir bool)) error {
	fd, err := b.OpenBeneath(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || notBeneath(err) {
			return nil
		}
		return fmt.Errorf("walk %q: %w", dir, err)
	}
	return walkEntries(fd, dir, func(dirfd int, name, p string, isDir bool) {
		if !isDir {
			fn(p, 0, false)
			return
		}
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			fn(p, b.ino(&st), true)
		} else {
			fn(p, 0, true) // gone or replaced since the listing
		}
	})
}

// List calls fn for every entry directly beneath dir (nothing if dir is
// gone or not a directory).
func (b *Tree) List(dir string, fn func(string)) error {
	return b.list(dir, false, func(p string, _ bool) { fn(p) })
}

// ListTyped is List that also says which entries are directories (from
// the directory's own entry types: no stat per entry on ext4 and XFS).
func (b *Tree) ListTyped(dir string, fn func(path string, isDir bool)) error {
	return b.list(dir, true, fn)
}

func (b *Tree) list(dir string, typed bool, fn func(string, bool)) error {
	fd, err := b.OpenBeneath(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || notBeneath(err) {
			return nil
		}
		return fmt.Errorf("list %q: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	emit := func(n string, isDir bool) {
		if dir != "" || n != hsmctl.Dir {
			fn(JoinPath(dir, n), isDir)
		}
	}
	if typed {
		ents, err := f.ReadDir(-1)
		for _, e := range ents {
			emit(e.Name(), e.IsDir())
		}
		if err != nil {
			return fmt.Errorf("list %q: %w", dir, err)
		}
		return nil
	}
	names, err := f.Readdirnames(-1)
	for _, n := range names {
		emit(n, false)
	}
	if err != nil {
		return fmt.Errorf("list %q: %w", dir, err)
	}
	return nil
}

// walkFd lists the directory fd (taking ownership of it) recursively.
func walkFd(fd int, dir string, fn func(string)) error {
	return walkEntries(fd, dir, func(_ int, _, p string, _ bool) { fn(p) })
}

// WalkInodes calls fn for every entry of BACKING that is not a directory,
// with its inode and link count (checkpoint.InodeWalker). Directories
// cost no stat: the directory's own entry types say which they are.
func (b *Tree) WalkInodes(fn func(path string, ino uint64, nlink uint32)) error {
	fd, err := unix.Openat(b.rootFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("walk inodes: %w", err)
	}
	return walkEntries(fd, "", func(dirfd int, name, p string, isDir bool) {
		if isDir || p == hsmctl.Dir {
			return
		}
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			fn(p, b.ino(&st), uint32(st.Nlink))
		}
	})
}

// walkEntries lists the directory fd (taking ownership of it)
// recursively: fn gets each entry's directory fd, name and path.
func walkEntries(fd int, dir string, fn func(dirfd int, name, path string, isDir bool)) error {
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			p := JoinPath(dir, e.Name())
			isDir := e.Type()&os.ModeDir != 0
			fn(fd, e.Name(), p, isDir)
			if !isDir {
				continue
			}
			cfd, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
					continue
				}
				return fmt.Errorf("walk %q: %w", p, err)
			}
			if err := walkEntries(cfd, p, fn); err != nil {
				return err
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("walk %q: %w", dir, err)
		}
	}
}
