package fs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hsmfs/hsmfs/internal/backing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"golang.org/x/sys/unix"
)

var (
	_ = (gofs.NodeMkdirer)((*Node)(nil))
	_ = (gofs.NodeMknoder)((*Node)(nil))
	_ = (gofs.NodeSymlinker)((*Node)(nil))
	_ = (gofs.NodeLinker)((*Node)(nil))
	_ = (gofs.NodeUnlinker)((*Node)(nil))
	_ = (gofs.NodeRmdirer)((*Node)(nil))
	_ = (gofs.NodeRenamer)((*Node)(nil))
)

// begin opens n's directory in BACKING (checked to be n: identity.go) and
// records the intent for one name in it. On success the caller must give
// dirfd back with putDir (it may be shared: dircache.go) and end the
// token.
func (n *Node) begin(name string, op checkpoint.Op, flags uint8) (tok checkpoint.Token, dirfd int, errno syscall.Errno) {
	if n.reserved(name) {
		return tok, -1, syscall.EPERM
	}
	dirfd, dir, errno := n.dirFd()
	if errno != 0 {
		return tok, -1, errno
	}
	rel := backing.JoinPath(dir, name)
	in := checkpoint.Intent{Op: op, Flags: flags, Path: rel}
	switch op {
	case checkpoint.OpUnlink, checkpoint.OpRmdir:
		// The old names follow what left a directory by inode: the
		// directory, and a removed directory itself
		// (checkpoint/oldnames.go). A create of a file needs neither:
		// what it made is found by the walks, or by its own removal or
		// rename.
		in.Parent = n.StableAttr().Ino
		if op == checkpoint.OpRmdir {
			in.Ino, _ = n.entryKind(n.GetChild(name), dirfd, name)
		}
	case checkpoint.OpMkdir:
		// A mkdir's record says that the name was free until it ran,
		// and where: what a copy may hold beneath an old name is told
		// by when each directory came there (checkpoint/oldnames.go,
		// relevant). The kernel sends no mkdir for a name it knows, and
		// this directory is locked until the reply, so a name taken
		// now was taken around hsmfs: refused before the record.
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			n.r.b.PutDir(dirfd)
			return tok, -1, syscall.EEXIST
		}
		in.Parent = n.StableAttr().Ino
	}
	tok, errno = n.r.intend(in)
	if errno != 0 {
		n.r.b.PutDir(dirfd)
		return tok, -1, errno
	}
	return tok, dirfd, 0
}

func dirOf(rel string) string {
	d, _ := backing.SplitPath(rel)
	return d
}

// create is the common tail of mkdir, mknod and symlink: make the entry
// with mk, give it to the caller, and return its inode.
func (n *Node) create(ctx context.Context, name string, op checkpoint.Op, flags uint8, mode uint32, out *fuse.EntryOut, mk func(dirfd int, mode uint32) error) (*gofs.Inode, syscall.Errno) {
	tok, dirfd, errno := n.begin(name, op, flags)
	if errno != 0 {
		return nil, errno
	}
	defer tok.End()
	defer n.r.b.PutDir(dirfd)
	dir := &newParent{r: n.r, fd: dirfd}
	mode = n.r.callerMode(ctx, dir, mode)
	if err := mk(dirfd, mode); err != nil {
		return nil, toErrno(err)
	}
	if err := n.r.restoreMode(dir, name, -1, mode); err != nil {
		n.r.log.Warn(op.String()+": could not give the new entry the mode asked for", "name", name, "mode", fmt.Sprintf("%04o", mode&0o7777), "err", err)
	}
	n.r.giveToCaller(ctx, dirfd, name, mode)
	ch, errno := n.newChild(ctx, dirfd, name, out)
	n.addedAs(name, out, errno, op == checkpoint.OpMkdir)
	return ch, errno
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, checkpoint.OpMkdir, checkpoint.FlagDir, mode|unix.S_IFDIR, out, func(dirfd int, mode uint32) error {
		return unix.Mkdirat(dirfd, name, mode&0o7777)
	})
}

func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, checkpoint.OpMknod, 0, mode, out, func(dirfd int, mode uint32) error {
		return unix.Mknodat(dirfd, name, mode, int(rdev))
	})
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, checkpoint.OpSymlink, 0, unix.S_IFLNK, out, func(dirfd int, _ uint32) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	tn, ok := target.(*Node)
	if !ok {
		return nil, syscall.EPERM // the control files cannot be linked
	}
	src, ok := tn.relPath()
	if !ok {
		return nil, syscall.ENOENT
	}
	if n.reserved(name) {
		return nil, syscall.EPERM
	}
	// A link can bring a renamed inode back to its old name (moves.go).
	n.r.moves.sweep()
	sfd, sname, errno := tn.parentFd(true)
	if errno != 0 {
		return nil, errno
	}
	defer n.r.b.PutDir(sfd)
	dfd, dir, errno := n.dirFd()
	if errno != 0 {
		return nil, errno
	}
	defer n.r.b.PutDir(dfd)
	rel := backing.JoinPath(dir, name)
	tok, errno := n.r.intend(checkpoint.Intent{Op: checkpoint.OpLink, Ino: tn.StableAttr().Ino, Path: rel, Path2: src})
	if errno != 0 {
		return nil, errno
	}
	defer tok.End()
	if err := unix.Linkat(sfd, sname, dfd, name, 0); err != nil {
		return nil, toErrno(err)
	}
	ch, errno := n.newChild(ctx, dfd, name, out)
	n.addedAs(name, out, errno, false)
	return ch, errno
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	tok, dirfd, errno := n.begin(name, checkpoint.OpUnlink, 0)
	if errno != 0 {
		return errno
	}
	defer tok.End()
	defer n.r.b.PutDir(dirfd)
	gone := n.r.hsmVictim(dirfd, name)
	defer gone()
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil {
		n.removed(name)
	}
	return toErrno(err)
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	tok, dirfd, errno := n.begin(name, checkpoint.OpRmdir, checkpoint.FlagDir)
	if errno != 0 {
		return errno
	}
	defer tok.End()
	defer n.r.b.PutDir(dirfd)
	err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == nil {
		n.r.b.InvalidateDirs() // a directory is gone (dircache.go)
		n.removed(name)
	}
	return toErrno(err)
}

// Rename records both names; if a directory moves, the query lists
// everything beneath its new name.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EPERM // into the control directory
	}
	if n.reserved(name) || np.reserved(newName) {
		return syscall.EPERM
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE|unix.RENAME_WHITEOUT) != 0 {
		return syscall.EINVAL
	}
	ofd, odir, errno := n.dirFd()
	if errno != 0 {
		return errno
	}
	defer n.r.b.PutDir(ofd)
	nfd, ndir := ofd, odir
	if np != n {
		if nfd, ndir, errno = np.dirFd(); errno != 0 {
			return errno
		}
		defer n.r.b.PutDir(nfd)
	}
	oldRel, newRel := backing.JoinPath(odir, name), backing.JoinPath(ndir, newName)

	// go-fuse moves the inode in its tree only after Rename returns; a
	// query waits for that (moves.go). An exchange moves both.
	moved, dest := n.GetChild(name), np.GetChild(newName)
	var fl uint8
	ino, isDir := n.entryKind(moved, ofd, name)
	if isDir {
		fl |= checkpoint.FlagDir
	}
	// What newName holds: the other side of an exchange, or a directory
	// that the rename replaces (an empty one), whose old entries the
	// old names follow by its inode (checkpoint/oldnames.go). The
	// kernel looked the target up before the rename, so an existing
	// one has a node.
	var dino uint64
	var disDir bool
	if flags&unix.RENAME_EXCHANGE != 0 {
		fl |= checkpoint.FlagExchange
		if dino, disDir = n.entryKind(dest, nfd, newName); disDir {
			fl |= checkpoint.FlagDir
		}
	} else if dest != nil && dest.StableAttr().Mode&unix.S_IFMT == unix.S_IFDIR {
		dino = dest.StableAttr().Ino
	}
	tok, errno := n.r.intend(checkpoint.Intent{Op: checkpoint.OpRename, Flags: fl, Ino: ino, Ino2: dino,
		Parent: n.StableAttr().Ino, Parent2: np.StableAttr().Ino, Path: oldRel, Path2: newRel})
	if errno != 0 {
		return errno
	}
	from, fromName := n.EmbeddedInode(), name
	if moved == nil && flags&unix.RENAME_EXCHANGE != 0 {
		from, fromName, moved = np.EmbeddedInode(), newName, dest
	}
	// Listed before BACKING changes, so that an operation that meets
	// the new BACKING through the old tree waits for go-fuse's move
	// (identity.go); dropped again if the rename fails.
	var mv uint64
	if moved != nil {
		mv = n.r.moves.add(from, fromName, moved)
	}
	replaced := func() {}
	if flags&unix.RENAME_EXCHANGE == 0 {
		replaced = n.r.hsmVictim(nfd, newName)
	}
	err := unix.Renameat2(ofd, name, nfd, newName, uint(flags))
	replaced()
	if err == nil && (fl&checkpoint.FlagDir != 0 || ino == 0) {
		n.r.b.InvalidateDirs() // a directory moved (dircache.go)
	}
	if err == nil {
		if flags&unix.RENAME_EXCHANGE != 0 {
			n.added(name, dino, disDir)
		} else if !sameFile(dest, ino) || gone(ofd, name) {
			n.removed(name)
		}
		np.added(newName, ino, isDir)
	}
	if err != nil && moved != nil {
		n.r.moves.drop(mv)
	}
	tok.End()
	return toErrno(err)
}

// sameFile tells whether the rename's target was a link of the inode ino
// being renamed: then rename(2) does nothing and the old name stays, so
// only then is it worth a stat (gone) before the log hears it is removed.
// The kernel looks the target up before a rename, so an existing target
// has a node.
func sameFile(dest *gofs.Inode, ino uint64) bool {
	return dest != nil && ino != 0 && dest.StableAttr().Ino == ino
}

// gone tells whether dirfd holds name no more.
func gone(dirfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == unix.ENOENT
}

// entryKind gives the inode number of (dirfd, name) and whether it is a
// directory: from its node if the kernel has looked it up (the type of
// an inode never changes), which saves a stat per rename, else from
// BACKING (numbered as the node would be). ino is 0 if neither knows it.
func (n *Node) entryKind(child *gofs.Inode, dirfd int, name string) (ino uint64, isDir bool) {
	if child != nil {
		a := child.StableAttr()
		return a.Ino, a.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return 0, false
	}
	return n.r.inoOf(&st), st.Mode&unix.S_IFMT == unix.S_IFDIR
}
