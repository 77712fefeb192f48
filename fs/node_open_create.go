package fs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/hsmfs/hsmfs/internal/backing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeOpener)((*Node)(nil))
	_ = (gofs.NodeCreater)((*Node)(nil))
	_ = (gofs.NodeTmpfiler)((*Node)(nil))
)

func isWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
}

// Open opens the file in BACKING. Opening for writing is a modification
// for as long as the file stays open: its intent is durable before the
// backing file is opened (O_TRUNC included).
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// The kernel hands the offsets of O_APPEND writes; FMODE_EXEC is not
	// an open(2) flag.
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC
	rel, ok := n.relPath()
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	var h *checkpoint.Handle
	kill := n.r.killRequested(ctx)
	if isWrite(flags) {
		var extra []checkpoint.Op
		if flags&syscall.O_TRUNC != 0 {
			extra = append(extra, checkpoint.OpTruncate)
		}
		var errno syscall.Errno
		if h, errno = n.r.intendOpen(checkpoint.OpWrite, rel, n.relPath, n.StableAttr().Ino, extra...); errno != 0 {
			return nil, 0, errno
		}
	}
	// The HSM hears of the open before a truncation reaches the file
	// (hsm.go), so the truncation is done here, not by openat.
	// O_RDONLY|O_TRUNC truncates too, on Linux (for a caller who may
	// write the file).
	trunc := flags&syscall.O_TRUNC != 0
	uncount := n.countOpen(flags)
	fd, errno := n.openSelf(flags &^ syscall.O_TRUNC)
	if errno == 0 {
		if f, errno, done := n.openTierCopy(ctx, fd, flags); done {
			if errno != 0 {
				uncount()
				return nil, 0, errno
			}
			return f, 0, 0
		}
		if errno = n.hsmOpening(ctx, fd, isWrite(flags), trunc); errno == 0 && trunc {
			errno = n.truncate(fd)
		}
		if errno != 0 {
			unix.Close(fd)
		}
	}
	if errno != 0 {
		uncount()
		if h != nil {
			h.Release()
		}
		return nil, 0, errno
	}
	if kill && h != nil {
		// O_TRUNC by a caller without CAP_FSETID (killpriv.go), part of
		// the truncate, under the intent taken with the open.
		if err := clearPrivs(ctx, fd); err != nil {
			unix.Close(fd)
			h.Release()
			return nil, 0, toErrno(err)
		}
	}
	return newFile(fd, flags, h, n.r, n.relPath, n), 0, 0
}

// Create makes and opens a new file. The create intent and the
// open-for-write intent share one sync.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.reserved(name) {
		return nil, nil, 0, syscall.EPERM
	}
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC
	dirfd, dir, errno := n.dirFd()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer n.r.b.PutDir(dirfd)
	rel := backing.JoinPath(dir, name)
	// Until the inode is in go-fuse's tree its path is rel (go-fuse adds
	// it after Create returns; a query meanwhile must still re-record the
	// open file); afterwards it follows renames, and fails once the file
	// is unlinked.
	var child atomic.Pointer[gofs.Inode]
	var placed atomic.Bool
	pathFn := func() (string, bool) {
		c := child.Load()
		if c == nil {
			return rel, true
		}
		if p, ok := inodePath(c); ok {
			placed.Store(true)
			return p, true
		}
		if !placed.Load() {
			return rel, true
		}
		return "", false
	}
	var h *checkpoint.Handle
	var tok checkpoint.Token
	if isWrite(flags) {
		extra := []checkpoint.Op{checkpoint.OpCreate}
		if flags&syscall.O_TRUNC != 0 {
			extra = append(extra, checkpoint.OpTruncate)
		}
		h, errno = n.r.intendOpen(checkpoint.OpCreate, rel, pathFn, 0, extra...)
	} else {
		tok, errno = n.r.intend(checkpoint.Intent{Op: checkpoint.OpCreate, Path: rel})
	}
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer tok.End()
	fail := func(errno syscall.Errno) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
		if h != nil {
			h.Release()
		}
		return nil, nil, 0, errno
	}
	parent := &newParent{r: n.r, fd: dirfd}
	mode = n.r.callerMode(ctx, parent, mode)
	trunc := flags&syscall.O_TRUNC != 0
	fd, made, err := createAt(dirfd, name, int(flags&^syscall.O_TRUNC), mode)
	if err != nil {
		return fail(toErrno(err))
	}
	if made {
		if err := n.r.restoreMode(parent, name, fd, mode); err != nil {
			n.r.log.Warn("create: could not give the new file the mode asked for", "path", rel, "mode", fmt.Sprintf("%04o", mode&0o7777), "err", err)
		}
		n.r.giveToCaller(ctx, dirfd, name, mode|unix.S_IFREG)
	}
	var st syscall.Stat_t
	var btime syscall.Timespec
	if err := statAt(fd, "", &st, &btime); err != nil {
		unix.Close(fd)
		n.added(name, 0, false) // made, inode unknown: see addedAs
		return fail(toErrno(err))
	}
	out.Attr.FromStat(&st)
	id := n.idFromStat(&st, &btime)
	n.added(name, id.Ino, false)
	ch := n.NewInode(ctx, &gofs.LoopbackNode{RootData: n.r.lroot}, id)
	child.Store(ch)
	chNode, _ := ch.Operations().(*Node)
	if chNode == nil {
		unix.Close(fd)
		return fail(syscall.EIO)
	}
	uncount := chNode.countOpen(flags)
	if errno := chNode.openExisting(ctx, fd, made, isWrite(flags), trunc); errno != 0 {
		uncount()
		unix.Close(fd)
		return fail(errno)
	}
	if isWrite(flags) || chNode.writers.Load() > 0 {
		out.SetAttrTimeout(writerAttrTimeout)
	}
	return ch, newFile(fd, flags, h, n.r, pathFn, chNode), 0, 0
}

// countOpen counts an open among the node's opens (and writers) before
// it asks the HSM: a release or an archive that looks at the counts
// meanwhile sees it. The File uncounts at Release; uncount is for an
// open that fails.
func (n *Node) countOpen(flags uint32) (uncount func()) {
	n.opens.Add(1)
	w := isWrite(flags)
	if w {
		n.writers.Add(1)
	}
	return func() {
		n.opens.Add(-1)
		if w {
			n.writers.Add(-1)
		}
	}
}

// openExisting: a create that opened a file that was there already
// opens it as Open would: the HSM hears of it first, then O_TRUNC.
func (n *Node) openExisting(ctx context.Context, fd int, made, write, trunc bool) syscall.Errno {
	if made {
		return 0
	}
	if errno := n.hsmOpening(ctx, fd, write, trunc); errno != 0 || !trunc {
		return errno
	}
	return n.truncate(fd)
}

// createAt makes the file name in dirfd with O_EXCL, so that only a file
// made here gets its mode back (restoreMode) and is given to the caller;
// one that appeared meanwhile (made around the mount) is opened as it is,
// unless the caller asked for O_EXCL. made says which. A file that is
// gone again between the two is made after all.
func createAt(dirfd int, name string, flags int, mode uint32) (fd int, made bool, err error) {
	for try := 0; ; try++ {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err == nil || !errors.Is(err, unix.EEXIST) || flags&unix.O_EXCL != 0 {
			return fd, err == nil, err
		}
		fd, err = unix.Openat(dirfd, name, flags&^unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.ENOENT) || try == 3 {
			return fd, false, err
		}
	}
}

// Tmpfile is refused: an O_TMPFILE file has no name to record until it is
// linked, and LINK does not carry the descriptor that would name it.
// Programs fall back to a named temporary file.
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// openSelf opens the node's file in BACKING with flags (never O_TRUNC:
// Open truncates once the HSM has heard of it), checked to be the node's
// inode (identity.go).
func (n *Node) openSelf(flags uint32) (int, syscall.Errno) {
	for try := 0; ; try++ {
		dirfd, name, errno := n.parentFd(false)
		if errno != 0 {
			return -1, errno
		}
		fd, err := unix.Openat(dirfd, name, int(flags)|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		n.r.b.PutDir(dirfd)
		if err == nil {
			if n.is(fd, "") {
				return fd, 0
			}
			unix.Close(fd)
			err = unix.ESTALE
		}
		if !behind(err) || !n.r.retry(try) {
			return -1, toErrno(err)
		}
	}
}
