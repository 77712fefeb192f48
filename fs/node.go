package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"
	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/internal/hsmctl"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

// Root is the state shared by every node of one mount.
type Root struct {
	b     *backing.Tree
	tr    *checkpoint.Tracker
	lroot *gofs.LoopbackRoot
	node  *Node
	ctl   *ctlState
	uid   uint32 // the user who mounted: the owner of .hsm
	gid   uint32
	// euid and egid are the daemon's own: what it creates starts as
	// theirs (giveToCaller).
	euid, egid uint32
	log        *slog.Logger
	// passthrough lets the kernel do file I/O on the backing fd.
	passthrough bool
	// kills notes the requests that asked for setuid, setgid and
	// capabilities to be cleared (killpriv.go).
	kills *killFlags
	// moves lists renames that go-fuse has not applied to its tree yet.
	moves moves
	// onJournalError is Config.OnJournalError (may be nil).
	onJournalError func(errno syscall.Errno)
	// nameAdded hears of every name made in BACKING (Config.NameAdded).
	nameAdded func(dir uint64, name string, ino uint64, isDir bool)
	// nameRemoved hears of every name removed from BACKING
	// (Config.NameRemoved).
	nameRemoved func(dir uint64, name string)
	// mounted is when Mount began: the times of the control files.
	mounted time.Time
	// noACLs: BACKING's file system has no ACLs (restoreMode).
	noACLs atomic.Bool
	// hsm restores released files at open and runs the HSM's commands
	// (hsm.go); nil without one.
	hsm *hsm.Manager
	// noRecall: the processes whose reads of released files come from
	// the tier (norecall.go).
	noRecall noRecall
	// prune keeps the nodes that the kernel holds within the budget
	// (prune.go).
	prune *pruner
}

// added tells nameAdded that the directory n holds name as ino now.
func (n *Node) added(name string, ino uint64, isDir bool) {
	n.r.nameAdded(n.backingIno(), name, ino, isDir)
}

// addedAs tells nameAdded of a name that was made, as newChild found it:
// if it could not look at the name (errno), its inode is logged as 0,
// which the check lists whatever is there.
func (n *Node) addedAs(name string, out *fuse.EntryOut, errno syscall.Errno, isDir bool) {
	ino := out.Attr.Ino
	if errno != 0 {
		ino = 0
	}
	n.added(name, ino, isDir)
}

// removed tells nameRemoved that the directory n holds name no more.
func (n *Node) removed(name string) {
	n.r.nameRemoved(n.backingIno(), name)
}

// backingIno is n's inode number in BACKING.
func (n *Node) backingIno() uint64 {
	if n.IsRoot() {
		return n.r.b.Ino()
	}
	return n.StableAttr().Ino
}

// Node is a passthrough node over BACKING. Reads go to the embedded
// LoopbackNode; every modification records its intent with the tracker
// first and is then carried out with *at calls beneath BACKING's root fd.
type Node struct {
	*gofs.LoopbackNode
	r *Root
	// writers counts the node's open writable files: while there are
	// any, the kernel keeps its attributes only briefly (cache.go).
	writers atomic.Int32
	// opens counts all of the node's open files (internal/hsm refuses to
	// release a file that is open): counted before the open asks the
	// HSM, uncounted at release.
	opens atomic.Int32
	// slot is the node's place in the node budget's queue (prune.go;
	// nil without a budget).
	slot *pruneSlot
}

var (
	_ = (gofs.NodeWrapChilder)((*Node)(nil))
	_ = (gofs.NodeLookuper)((*Node)(nil))
)

// WrapChild makes every node that go-fuse creates beneath the root (on
// lookup, create, mkdir, ...) a tracked Node.
func (n *Node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	if lb, ok := ops.(*gofs.LoopbackNode); ok {
		return &Node{LoopbackNode: lb, r: n.r}
	}
	return ops
}

// relPath is the node's path relative to the mount root ("" for the root)
// and false if the node has no name any more (unlinked while open).
func (n *Node) relPath() (string, bool) {
	return inodePath(&n.Inode)
}

func inodePath(in *gofs.Inode) (string, bool) {
	if in.IsRoot() {
		return "", true
	}
	var segs []string
	for p := in; !p.IsRoot(); {
		name, parent := p.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		p = parent
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/"), true
}

// reserved reports whether name in n is the control directory's name.
func (n *Node) reserved(name string) bool {
	return name == hsmctl.Dir && n.IsRoot()
}

func (n *Node) idFromStat(st *syscall.Stat_t, btime *syscall.Timespec) gofs.StableAttr {
	// The same inode numbering as go-fuse's loopback, so that nodes it
	// creates and nodes created here agree.
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	rd := n.r.lroot.Dev
	swappedRootDev := (rd << 32) | (rd >> 32)
	gen := uint64(1)
	if btime.Sec != 0 || btime.Nsec != 0 {
		gen = uint64(btime.Sec)*1e9 + uint64(btime.Nsec)
	}
	return gofs.StableAttr{Mode: uint32(st.Mode), Gen: gen, Ino: (swapped ^ swappedRootDev) ^ st.Ino}
}

// statAt stats (dirfd, name) without following a symlink, with birth time.
func statAt(dirfd int, name string, st *syscall.Stat_t, btime *syscall.Timespec) error {
	var x unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return err
	}
	st.Dev = unix.Mkdev(x.Dev_major, x.Dev_minor)
	st.Ino = x.Ino
	st.Nlink = uint64(x.Nlink)
	st.Mode = uint32(x.Mode)
	st.Uid = x.Uid
	st.Gid = x.Gid
	st.Rdev = unix.Mkdev(x.Rdev_major, x.Rdev_minor)
	st.Size = int64(x.Size)
	st.Blksize = int64(x.Blksize)
	st.Blocks = int64(x.Blocks)
	st.Atim = syscall.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)}
	st.Mtim = syscall.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)}
	st.Ctim = syscall.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)}
	*btime = syscall.Timespec{}
	if x.Mask&unix.STATX_BTIME != 0 {
		*btime = syscall.Timespec{Sec: x.Btime.Sec, Nsec: int64(x.Btime.Nsec)}
	}
	return nil
}

// newChild stats (dirfd, name) and returns the child inode for it.
func (n *Node) newChild(ctx context.Context, dirfd int, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var st syscall.Stat_t
	var btime syscall.Timespec
	if err := statAt(dirfd, name, &st, &btime); err != nil {
		return nil, toErrno(err)
	}
	out.Attr.FromStat(&st)
	id := n.idFromStat(&st, &btime)
	// The node that go-fuse holds for the name already, if it is this
	// inode: a new one would be made only for go-fuse to drop it (every
	// listing looks up every name it shows), and would count against
	// the node budget (prune.go) until collected.
	ch := n.GetChild(name)
	if ch == nil || ch.StableAttr() != (gofs.StableAttr{Mode: id.Mode & syscall.S_IFMT, Ino: id.Ino, Gen: id.Gen}) {
		ch = n.NewInode(ctx, &gofs.LoopbackNode{RootData: n.r.lroot}, id)
	}
	if cn, ok := ch.Operations().(*Node); ok && cn.writers.Load() > 0 {
		out.SetAttrTimeout(writerAttrTimeout) // cache.go
	}
	return ch, 0
}

// Lookup resolves name beneath n through fds, and serves the control
// directory at the root.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.reserved(name) {
		return n.r.ctl.lookupDir(ctx, out)
	}
	dirfd, _, errno := n.dirFd()
	if errno != 0 {
		// Not a missing name but a directory that could not be reached
		// (moved meanwhile): nothing for the kernel to keep (cache.go).
		out.SetEntryTimeout(1)
		return nil, errno
	}
	defer n.r.b.PutDir(dirfd)
	return n.newChild(ctx, dirfd, name, out)
}

// DaemonUmask is the umask the daemon runs with: what it creates for
// itself (the journal's files, its index) is its user's alone. What it
// creates in BACKING for a caller gets the caller's mode back
// (restoreMode).
const DaemonUmask = 0o077

// restoreMode gives a new entry the permission bits that the caller
// asked for, which the daemon's umask took away: the caller's own umask
// is applied to mode already (by the kernel, or by callerMode). A parent
// with a default ACL decides the bits itself (no umask applies then), and
// is left alone. With fd >= 0 the entry is that open file; else it is
// dir/name, and keeps the setgid bit that a setgid parent gave it
// (chmodNew).
func (r *Root) restoreMode(dir *newParent, name string, fd int, mode uint32) error {
	if mode&DaemonUmask == 0 || dir.inherits() {
		return nil
	}
	if fd >= 0 {
		return unix.Fchmod(fd, mode&0o7777)
	}
	return chmodNew(dir.fd, name, mode&unix.S_IFMT, r.euid, func(st *unix.Stat_t) uint32 {
		return st.Mode&0o7000 | mode&0o777
	})
}

// chmodNew sets the mode of the entry dirfd/name that was just made,
// through a descriptor opened without following a symlink, and only if
// it is still that entry as far as can be told: of type typ and owned
// by owner. Through the mount the kernel holds the parent's lock, so
// nothing can swap the entry; around it (outside writers, descriptors
// that an in-place mount did not cover) a symlink or someone else's
// entry swapped in is left alone rather than chmod'ed by the daemon.
func chmodNew(dirfd int, name string, typ, owner uint32, mode func(st *unix.Stat_t) uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if typ == 0 {
		typ = unix.S_IFREG // mknod without a type makes a regular file
	}
	if st.Mode&unix.S_IFMT != typ || st.Uid != owner {
		return fmt.Errorf("%s changed before its mode was set: %w", name, unix.ESTALE)
	}
	// An O_PATH descriptor takes no fchmod; its /proc link names the
	// inode itself.
	return unix.Fchmodat(unix.AT_FDCWD, backing.ProcFd(fd), mode(&st), 0)
}

// newParent is the directory a create makes its entry in. Whether it
// has a default ACL (a getxattr) is asked at most once per create, though
// callerMode and restoreMode both need it.
type newParent struct {
	r          *Root
	fd         int
	asked, has bool
}

func (d *newParent) inherits() bool {
	if !d.asked {
		d.has, d.asked = d.r.hasDefaultACL(d.fd), true
	}
	return d.has
}

// hasDefaultACL reports whether directory dirfd (O_PATH) has a default
// ACL; once the backing file system says it has no ACLs, it is not
// asked again.
func (r *Root) hasDefaultACL(dirfd int) bool {
	if r.noACLs.Load() {
		return false
	}
	_, err := unix.Getxattr(backing.ProcFd(dirfd), "system.posix_acl_default", nil)
	if errors.Is(err, unix.EOPNOTSUPP) {
		r.noACLs.Store(true)
	}
	return err == nil
}

// giveToCaller makes a new entry the caller's, as the kernel would have
// made it had the caller created it on the backing filesystem itself.
// hsmfs creates as its own user, so when it runs as root (with
// allow_other, other users create files too) the entry starts as root's:
//   - the owner becomes the caller;
//   - the group becomes the caller's, unless the directory is setgid, in
//     which case the backing filesystem already gave it the directory's
//     group (and a new directory the setgid bit);
//   - a chown clears setuid and setgid on anything but a directory, even
//     as root, so the mode that the kernel asked for (which it has already
//     stripped of what the caller may not set) is put back.
//
// No one else sees the entry in between: the kernel holds the parent
// directory's lock for the whole operation, and a root-owned entry is at
// most as open as the one the caller asked for.
func (r *Root) giveToCaller(ctx context.Context, dirfd int, name string, mode uint32) {
	if r.euid != 0 {
		return
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return
	}
	uid, gid := int(caller.Uid), int(caller.Gid)
	var dst unix.Stat_t
	if unix.Fstat(dirfd, &dst) == nil && dst.Mode&unix.S_ISGID != 0 {
		gid = -1 // the directory's group stays
	}
	if uid == int(r.euid) && (gid == -1 || gid == int(r.egid)) {
		return
	}
	if unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if t := mode & unix.S_IFMT; mode&(unix.S_ISUID|unix.S_ISGID) != 0 && t != unix.S_IFDIR && t != unix.S_IFLNK {
		chmodNew(dirfd, name, t, uint32(uid), func(*unix.Stat_t) uint32 { return mode & 0o7777 })
	}
}
