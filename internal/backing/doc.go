// Package backing is BACKING as hsmfs reaches it: through its root
// directory fd only, every path resolved beneath it with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) and acted on with *at
// calls, so that a symlink in BACKING never leads outside it. It holds
// the lock of one tracker per directory, the fds of recently used parent
// directories (dircache.go), and the walks, stats and listings that the
// tracker's queries use (checkpoint.Backing and its optional methods).
// It knows nothing of FUSE: fs is its FUSE side.
//
// Concurrency: every method may be called from many goroutines. The
// directory cache's mutex is a leaf lock; nothing else is shared but the
// root fd, which is open from Open to Close.
//
// Durability: Syncfs is what a bless calls before it discards anything
// (syncfs of BACKING's file system, then the hook set with SetAfterSync).
package backing
