// Package hsm is hsmfs's hierarchical storage manager: it archives a
// file's content to a tier (internal/tier), releases the local blocks,
// and restores the content when the file is opened through the mount.
// It knows neither FUSE nor badger: fs hands it the files (Target), and
// the journal keeps its table (Store).
//
// # State
//
// The table holds three kinds of rows (state.go): the tiers, one row per
// file that has a state (keyed by inode, with the birth time that says
// which file holds the inode number), and the tier objects to delete
// (orphans). Every row is read into memory at mount; the open path looks
// at memory only, and not at all while no file has a state.
//
// # Durability argument
//
// Every transition writes a begin record (File.Pending) and makes it
// durable before it touches the tier or the file (a release's one record,
// "released", is both: see Release), and ends with a commit
// (the same row, Pending cleared, the new state set) made durable before
// the transition returns. Recovery (load.go) finishes or undoes each
// pending transition, so that after any crash:
//
//   - a released file's content is in a committed object whose size and
//     CRC-32C the table holds (whatever share of its blocks a crash left
//     freed, its next open restores all of them): a release begins only
//     after its archive committed, and the archive only after the tier's Put
//     returned (the object synced, or a completed PUT), with the
//     checksum of the bytes sent and no open for writing, truncation or
//     change of size or mtime during the copy;
//   - a restore writes the content in place, verifies it, syncs it, and
//     only then commits "resident": a crash before leaves the file
//     released, and the next open starts the restore again;
//   - every object that is not the committed archive of a file is named
//     by a begin record or an orphan row, so it is collected;
//   - an open for writing or a truncation of an archived file makes it
//     dirty durably before it returns to fs, which only then lets the
//     modification reach the file (its intent is durable already): no
//     write lands in a file that the table calls clean, a dirty file is
//     never released, and its next archive makes a new object.
//
// A request's rows are written in one badger transaction, which a full
// batch may split; rows are ordered so that any prefix that survives is
// safe (an orphan row before the row that stops naming the object; a
// commit's file row before the orphan row of the object it replaces).
//
// Release and restore change no content, so they are not modifications
// and take no intent: they keep atime and mtime (the ctime moves).
//
// # Concurrency
//
// Manager.mu guards the maps of tiers and files; entry.mu guards one
// file's state. Lock order: Manager.mu, then entry.mu (forget holds both
// across its journal write, so that no entry for a new file of the same
// inode number is made before the old row's deletion is durable). An
// entry's mu is held across a release's punch and each commit (a
// journal sync), never across a request to the tier: Pending,
// entry.restoring and entry.truncating say that a transition runs, and
// the others refuse with ErrBusy or wait meanwhile. Every open of a released file waits for the one restore
// (entry.restoring); an open that gives up (a signal) leaves it running.
package hsm
