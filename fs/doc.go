// Package fs is the FUSE side of hsmfs, and the only package that
// imports go-fuse. Node embeds go-fuse's LoopbackNode but overrides every
// operation that touches BACKING. A modification asks the checkpoint
// tracker for a durable intent first, then is carried out beneath
// BACKING's root fd (internal/backing, BACKING's side, which knows no
// FUSE) with *at calls (openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, O_NOFOLLOW, AT_SYMLINK_NOFOLLOW),
// so a symlink inside BACKING never leads outside it, and finally ends
// the token, which records the completion. Reads use the same fds, so
// that no path is ever longer than one openat2 takes (trees deeper than
// PATH_MAX work).
//
// Files are split by family: node_dir_ops.go (mkdir, mknod, symlink,
// link, unlink, rmdir, rename), node_open_create.go (open, create),
// node_attr.go (setattr, xattrs, copy_file_range), node_read.go (getattr,
// statx, readlink, getxattr, listxattr, readdir, statfs), ioctl.go (the
// inode flags ioctls, the only ones that reach BACKING), killpriv.go
// (clearing setuid, setgid and capabilities under HANDLE_KILLPRIV_V2),
// file.go (the open file: write, fallocate, release, kernel passthrough),
// control.go (the .hsm directory), hsm.go (the HSM's side: restore and
// dirty at open, the commands and states as virtual xattrs, deleted
// files' states dropped), norecall.go (hsmfs's own consumers read
// released files from the tier), moves.go
// (renames that go-fuse has not applied to its tree yet), identity.go
// (every fd checked to be its node's inode, so that an operation never
// acts on what a stale path names), intent.go (the gate of every
// modification: its durable intent first, and the log and count of those
// that the tracker refused, for Config.OnJournalError), prune.go (the
// node budget: the kernel is asked to forget the oldest nodes past
// Config.MaxNodes), errno.go (the one place where errors become
// errnos).
//
// # Concurrency
//
// go-fuse calls the node methods from many goroutines. The package's own
// mutable state: ctlState.lastErr (guarded by ctlState.mu), the pending renames
// (moves.mu, held while go-fuse's inode locks are taken by GetChild,
// never the reverse), control.go's freeing flag (atomic) and the kill
// flags and umasks of requests in flight (killFlags.pending and
// killFlags.umasks, sync.Maps: one store and one delete per request that
// carries one, no lock held across calls), Root.noACLs (atomic: set once BACKING's file system says it
// has no ACLs), Node.writers and Node.opens (atomic: the node's open
// writable files and all its open files, counted before an open asks the
// HSM and uncounted at release; read by getattr, statx, lookup and the
// HSM's release and archive), and Root.noRecall (its own mutex: the
// processes registered with "norecall PID"), and the node budget's list
// (pruner.mu, a leaf lock: no notification is sent and no other lock is
// taken while it is held; a slot's forgotten flag and the counts are
// atomic, set by OnForget; Node.slot is written once, in OnAdd, before
// go-fuse publishes the node).
// Ordering between modifications and queries is the tracker's job.
//
// # Ownership of BACKING and modes
//
// backing.Tree.Lock takes an exclusive flock on BACKING's root fd for the life
// of the mount: one tracker per directory, whatever path reached it. The
// daemon runs with umask DaemonUmask (077) so that its own files are
// private; restoreMode gives what it creates in BACKING the mode the
// caller asked for, masked with the caller's umask: by the kernel, or,
// where hsmfs negotiated DONT_MASK (allow_other, with POSIX ACLs), by
// callerMode, which leaves the bits beneath a default ACL to the ACL.
//
// # Durability argument
//
// No method writes to BACKING before the tracker returned a token (or a
// Handle for files open for writing, whose Touch is checked on every
// write). If the tracker fails, the method returns the journal's errno
// and BACKING is untouched. Kernel passthrough hands a file's reads and
// writes to the kernel, which hsmfs then never sees: it is safe because
// a writable open holds a durable intent from open to release, and every
// query re-records it in its new period. Clearing setuid, setgid or
// capabilities is a modification like any other: it runs under the
// intent of the open, truncate or chown that caused it, or, for a
// write, under a chmod intent of its own. An ioctl
// reaches BACKING only through Node.Ioctl, which takes an intent before
// chattr. Reads never call the tracker (D5).
package fs
