package fs

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Nodes are reached in BACKING by their path in go-fuse's tree, and that
// path can be behind BACKING for a moment: go-fuse moves an inode in its
// tree only after Rename returns (moves.go), while the kernel sends other
// requests for the moved directory's descendants meanwhile (it does not
// lock them). During that moment the old path names nothing, or, after
// an exchange, the other directory: a mkdir through an fd of a/b while
// a and c were exchanged in a loop went to c/b in 1 of 6 tries.
//
// So every fd that a node's operation acts through is checked to be the
// node's inode (the inode number that go-fuse gave it, from BACKING's
// dev and ino). If it is not, the operation waits for go-fuse to apply
// the renames in flight (moves.settle), takes the path again, and
// retries; a node that still does not match after that has been changed
// beside hsmfs, and the operation fails with ESTALE. The check is one
// fstat of an fd that is usually cached.

// identityTries bounds the retries of one operation.
const identityTries = 20

// inoOf is the inode number that go-fuse gives the file of st (idFromStat).
func (r *Root) inoOf(st *unix.Stat_t) uint64 {
	var s syscall.Stat_t
	s.Dev, s.Ino = st.Dev, st.Ino
	return r.node.idFromStat(&s, &syscall.Timespec{}).Ino
}

// is reports whether (dirfd, name) (name "" for dirfd itself) is the
// node's inode, without following a symlink.
func (n *Node) is(dirfd int, name string) bool {
	var st unix.Stat_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if unix.Fstatat(dirfd, name, &st, flags) != nil {
		return false
	}
	return n.r.inoOf(&st) == n.StableAttr().Ino
}

// behind reports whether err may come from a path that go-fuse's tree
// has not caught up with.
func behind(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) ||
		errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ESTALE)
}

// retry waits before try number try of an operation whose node did not
// match: for the renames in flight, then a little longer each time (a
// rename is added to moves just before it reaches BACKING).
func (r *Root) retry(try int) bool {
	if try >= identityTries {
		return false
	}
	r.moves.settle()
	if try > 0 {
		time.Sleep(time.Duration(try) * 50 * time.Microsecond)
	}
	return true
}

// dirFd is an O_PATH fd of the directory n, checked to be n, with n's
// path. Give it back with putDir (it may be shared: dircache.go).
func (n *Node) dirFd() (fd int, rel string, errno syscall.Errno) {
	for try := 0; ; try++ {
		rel, ok := n.relPath()
		if !ok {
			return -1, "", syscall.ENOENT
		}
		fd, err := n.r.b.Dir(rel)
		if err == nil {
			if n.IsRoot() || n.is(fd, "") {
				return fd, rel, 0
			}
			n.r.b.PutDir(fd)
			err = unix.ESTALE
		}
		if !behind(err) || !n.r.retry(try) {
			return -1, "", toErrno(err)
		}
	}
}

// parentFd is the directory that holds n, checked to be n's parent, and
// n's name in it; with check, the name is checked to be n too. Give dirfd
// back with putDir. Not for the root.
func (n *Node) parentFd(check bool) (dirfd int, name string, errno syscall.Errno) {
	for try := 0; ; try++ {
		name, parent := n.Parent()
		if parent == nil {
			return -1, "", syscall.ENOENT
		}
		pn, ok := parent.Operations().(*Node)
		if !ok {
			return -1, "", syscall.ENOENT
		}
		dirfd, _, errno := pn.dirFd()
		if errno != 0 {
			return -1, "", errno
		}
		if !check || n.is(dirfd, name) {
			return dirfd, name, 0
		}
		n.r.b.PutDir(dirfd)
		if !n.r.retry(try) {
			return -1, "", syscall.ESTALE
		}
	}
}
