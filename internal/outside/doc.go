// Package outside finds, when hsmfs mounts, the changes made to BACKING
// while no hsmfs ran: before boot brought the mount up, after a crash, or
// by an administrator restoring files.
//
// # What it keeps
//
// An index of the tree (index.go): for every directory, by inode number,
// the names it holds and each name's inode number (numbered as go-fuse
// numbers them, so that a filesystem mounted beneath BACKING has numbers
// of its own, the same as in the log of names), and a moment W such
// that the index shows the tree as it was at some time at or after W. It
// lives in the file JOURNAL.tree beside the journal, is replaced whole
// (written to a temporary file, synced, renamed, directory synced), and
// ends with a CRC-32C: a damaged index is never used (the mount then
// tells every consumer to copy the whole tree once: checkpoint's
// RequireFullCopy, as it does when the index is missing after the first
// mount).
//
// hsmfs writes one at every mount (the check's own walk gives it, with W
// taken before the walk began) and one at every clean unmount: the
// mount's index with the log of names replayed on it (Replayed), W taken
// once the FUSE server has stopped. The log has every name that the mount
// made or removed, in order, so the replay is the tree as a walk would
// find it (TestCheckRandom compares the two at every clean end), in the
// time it takes to read and write the index, not to walk BACKING. If
// the mount's index cannot be read, a walk. After a crash, the index of
// that run's mount is the newest.
//
// # Why the check finds every change
//
// Every change to an entry sets the entry's ctime to the current time:
// content, mode, owner, xattrs, links, and a rename of the entry itself.
// Creating, removing or renaming a name also sets its directory's ctime.
// No user can set a ctime (touch -d sets mtime and atime, and the ctime
// to now). The kernel stamps ctime from a clock that lags the precise
// clock by at most a tick, so W is read from that same coarse clock and
// an entry counts as changed when its ctime is at or after W: a change
// in the same tick (the same second, too) as the unmount is caught.
//
// A change made after the index was taken therefore leaves a ctime at or
// after W on the entry or on its directory. The check walks BACKING and:
//   - lists every entry that is not a directory whose ctime is ≥ W;
//   - for every directory whose ctime is ≥ W, lists it (the root as
//     ".", which rsync takes for the root's own mode, owner, times and
//     xattrs) and compares its names with the index (by the directory's
//     inode, so a directory renamed through the mount is still found):
//     a name gone, or now
//     another inode, is listed with everything the index held beneath it
//     (rsync deletes a listed missing path recursively, and a directory
//     that is there again keeps stale entries unless they are listed); a
//     name new, or now another inode, is listed with everything beneath
//     it now (rsync does not recurse, and a directory moved in keeps the
//     old ctimes of its entries);
//   - after a crash, the index is the one of the crashed run's mount
//     with the log of names replayed on it (deltas.go): each name as its
//     last durable record left it, at or after the last bless, whose
//     query every copy is at or after; what changed since that query the
//     journal lists again;
//   - a directory whose ctime is ≥ W and that the index does not know
//     (made through the mount after the index was taken, and changed
//     since) has every entry listed; every directory beneath it that the
//     index does not know either is treated the same way, and one that
//     the index knows was moved in since and is listed whole.
//
// A directory whose ctime is before W has held the same names since the
// index was taken, and an entry whose ctime is before W is unchanged, so
// nothing else can have changed. The check over-lists what changed
// through the mount after the index was taken (after a crash: the whole
// crashed run), which rsync copies once more.
//
// The limit: a clock set back across W (by hand, or a step of NTP) can
// hide a change. The check compares W with the clock at mount and lists
// the whole tree when the clock is behind W, and every path of the index
// (by name, from its root), so that what was removed is deleted from the
// copy too; the same when BACKING is on another filesystem than when the
// index was taken (its inode numbers mean nothing there, its names do).
package outside
