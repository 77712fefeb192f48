package fs

import (
	"context"
	"hash/fnv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// .hsm/consumers/NAME/{changes,changes.json,ctl}: one directory per named
// consumer, made on lookup from the tracker's list (a consumer added or
// removed through .hsm/ctl appears or goes at once). Everything in them
// is refused as in .hsm itself (EPERM), by the embedded ctlDir.

// consumersDir is .hsm/consumers.
type consumersDir struct {
	ctlDir
}

var (
	_ = (gofs.NodeLookuper)((*consumersDir)(nil))
	_ = (gofs.NodeReaddirer)((*consumersDir)(nil))
	_ = (gofs.NodeLookuper)((*consumerDir)(nil))
	_ = (gofs.NodeReaddirer)((*consumerDir)(nil))
)

// consumerIno numbers a consumer's nodes (kind 0 for its directory)
// among the control inodes.
func consumerIno(name string, kind int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return ctlInoBase | 1<<61 | (h.Sum64()&(1<<56-1))<<3 | uint64(kind)
}

func (d *consumersDir) exists(name string) bool {
	for _, c := range d.c.r.tr.ConsumerNames() {
		if c == name {
			return true
		}
	}
	return false
}

func (d *consumersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !d.exists(name) {
		return nil, syscall.ENOENT
	}
	d.c.attr(&out.Attr, syscall.S_IFDIR|0555)
	n := &consumerDir{ctlDir: ctlDir{c: d.c}, name: name}
	return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: consumerIno(name, 0)}), 0
}

func (d *consumersDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for _, name := range d.c.r.tr.ConsumerNames() {
		es = append(es, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: consumerIno(name, 0)})
	}
	return gofs.NewListDirStream(es), 0
}

// consumerDir is .hsm/consumers/NAME.
type consumerDir struct {
	ctlDir
	name string
}

// consumerFiles are a consumer's files: what .hsm has, without status.
var consumerFiles = ctlFiles[:3]

func (d *consumerDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	for i, f := range consumerFiles {
		if f.name == name {
			d.c.attr(&out.Attr, syscall.S_IFREG|f.mode)
			n := &ctlNode{c: d.c, kind: f.kind, mode: f.mode, consumer: d.name}
			return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: consumerIno(d.name, i+1)}), 0
		}
	}
	return nil, syscall.ENOENT
}

func (d *consumerDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var es []fuse.DirEntry
	for i, f := range consumerFiles {
		es = append(es, fuse.DirEntry{Name: f.name, Mode: syscall.S_IFREG, Ino: consumerIno(d.name, i+1)})
	}
	return gofs.NewListDirStream(es), 0
}
