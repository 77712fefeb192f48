package fs

import (
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kernel caching. The kernel keeps names, attributes, missing names and
// directory listings for Config.CacheTimeout (a day by default): hsmfs
// is BACKING's only writer (in place nothing else can reach it, unless a
// process held something beneath it from before the mount, and then the
// mount keeps the one-second timeouts; around a mount that is not in
// place, changes are a documented limit), so it can say when something
// changes behind the kernel's back.
//
// What changes through a FUSE request the kernel mostly sees for itself:
// a reply carries the new attributes (create, mkdir, link, the lookup
// after a rename), it drops or moves the dentries of unlink, rmdir and
// rename, it invalidates the parent's attributes and listing on every
// change of a directory (the listing: it bumps the directory's version,
// which a read from offset 0 checks), and a write, truncate, fallocate or
// copy_file_range invalidates the file's size and times. A setattr
// reply carries no timeout (go-fuse sets none), so the next stat asks
// again. Hard links share one kernel inode (go-fuse keys nodes by inode
// number and birth time), so a change through one name shows through
// the others.
//
// What no reply tells the kernel, hsmfs invalidates:
//
//   - the attributes after setxattr and removexattr: an ACL changes the
//     mode, and without FUSE_POSIX_ACL the kernel marks only the ctime
//     stale, while its permission checks (default_permissions) and a
//     statx for the mode alone read the cached mode;
//   - the attributes after an ioctl (chattr): its flags and ctime;
//   - the attributes at every close (flush) and release of a writable
//     file: writes through a shared mapping of a passthrough file reach
//     BACKING without a request. While a file is open for writing, its
//     attributes are kept for writerAttrTimeout only, since such writes
//     can change its times at any moment;
//   - the names of .hsm/consumers on consumer add and rm (entry, or
//     missing entry);
//   - nothing for the check at mount for changes made while hsmfs did
//     not run: it runs before the mount goes live.
//
// A lookup that fails because the directory could not be reached (not
// because the name is missing) is not kept as a missing name.
//
// Left to the backing file system: st_blocks, which delayed allocation
// and writeback change with no request (it shows when the attributes
// are next fetched).

// writerAttrTimeout is how long the kernel keeps the attributes of a
// file while it is open for writing.
const writerAttrTimeout = time.Second

// Each notification goes out before the request that made the change
// returns, so the change shows once that returns. None waits on a lock
// that the request holds: invalidating attributes alone (no pages) takes
// no inode lock (setxattr, ioctl, flush and release hold the inode's,
// or none), and an entry is invalidated in a directory (the consumers')
// that the request (a write to ctl) does not lock.

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
// changes: every change through the mount bumps the directory's version,
// which the kernel checks, with its mtime, when a read starts from the
// beginning.
const dirCacheFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
