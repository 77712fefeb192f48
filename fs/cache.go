package fs

import (
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kernel caching. The kernel keeps names, attributes and missing names
// for Config.CacheTimeout (a day by default), and directory listings
// until the directory changes: hsmfs is BACKING's only writer (in place
// nothing else can reach it; around a mount that is not in place,
// changes are a documented limit), so it can say when something changes
// behind the kernel's back. What changes through a FUSE request the
// kernel sees for itself: a reply carries the new attributes (setattr,
// create, link, the lookup after a rename), it drops or moves the
// dentries of unlink, rmdir and rename, it invalidates the parent's
// attributes and listing on every change of a directory, and a write
// (passthrough included), a truncate, a fallocate or a copy_file_range
// invalidates the file's size and times, which every stat(2) asks for,
// so it fetches them all again (a write that cleared setuid or setgid
// included). Hard links share one kernel inode (go-fuse keys nodes by
// inode number and birth time), so a change through one name shows
// through the others. What hsmfs changes that no reply tells the kernel:
//
//   - what an ioctl changes (chattr): the inode's flags and its ctime,
//     which no ioctl reply carries; its attributes are invalidated after
//     it;
//   - the named consumers (.hsm/consumers/NAME), made and removed by
//     commands written to ctl: each name is invalidated after consumer
//     add and rm, so that a lookup that found no NAME before, or one that
//     found it, asks again;
//   - the changes that the check at mount finds were made while hsmfs
//     did not run: it runs before the mount goes live, when the kernel
//     holds nothing yet.
//
// Each notification goes out before the request that made the change
// returns, so the change shows once that returns. Neither waits on a lock
// that the request holds: invalidating attributes alone (no pages) takes
// no inode lock, and an entry is invalidated in a directory (the
// consumers') that the request (a write to ctl) does not lock.

// invalidateAttrs drops the kernel's attributes of in (not its pages).
func invalidateAttrs(in *gofs.Inode) {
	in.NotifyContent(-1, 0)
}

// invalidateEntry drops the kernel's entry (or missing entry) of name in
// the directory dir.
func invalidateEntry(dir *gofs.Inode, name string) {
	if dir != nil {
		dir.NotifyEntry(name)
	}
}

// dirCacheFlags let the kernel keep a directory's listing until it
// changes: it drops it itself on every change through the mount, and
// checks the directory's mtime with each open.
const dirCacheFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
