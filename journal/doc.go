// Package journal is the durable intent journal of hsmfs: the badger
// database in which the tracker records, before each modification of
// BACKING, that a path may change. It implements checkpoint.Store and is
// the only package of the project that imports badger, so the on-disk
// layout, the locking and the durability argument all live here.
//
// # What it owns
//
// A journal directory holds a badger database plus one file of ours,
// hsmfs.lock (see Locking). The database belongs to exactly one BACKING
// directory, whose absolute path is written on first open; opening it for
// another BACKING fails with ErrOtherBacking, because answering "what
// changed" for the wrong tree would silently corrupt a backup.
//
// Nothing in this package ever deletes, truncates or resets a journal it
// cannot read: a journal that badger refuses, whose metadata is unreadable
// or whose format version is unknown fails with ErrDamaged and is left as
// it was, for a human (or `hsmfs journal check`) to look at.
//
// # Privacy
//
// The journal is the record of what changed: whoever can write it can
// hide a change. Open refuses a directory that group or others may
// write, or that another user owns (ErrNotPrivate), and makes one that
// others may read 0700 and its files 0600 (private.go). The daemon's
// umask (077) keeps what badger creates afterwards 0600.
//
// # Locking
//
// Open takes an exclusive, non-blocking flock on hsmfs.lock before it
// opens badger and keeps it until Close. flock locks belong to the open
// file description, so a second Open conflicts whether it comes from
// another process or from this one, and the kernel drops the lock when
// the holder dies, so a crashed daemon never leaves a stale lock. A
// conflict fails with ErrInUse. badger's own flock on the directory is a
// second line of defence against tools that open the database directly.
//
// # Concurrency
//
// Every method is safe for concurrent use. Append and SaveState hand
// their work to one committer goroutine, which collects every request
// pending at that moment into one batch, writes the batch in one badger
// transaction (more only if it exceeds badger's transaction limit), syncs
// once and then wakes every waiter of the batch: concurrent appenders
// share syncs (group commit). AppendAsync only queues: the committer,
// woken by it alone, waits up to a millisecond for more (or for a
// request, which ends the wait) and writes the queue in one unsynced
// transaction, so a serial stream of fine records costs one badger write
// per millisecond instead of one per record. LastSeq goes through the
// committer unsynced, so that the queue is written (and numbered) before
// it answers. Reopen (taking a completion back) goes
// through the committer too and is synced; Complete writes directly, in
// one unsynced transaction. DropBefore uses badger's DropPrefix, which
// refuses concurrent writes, so it excludes every other writer while it
// runs (they wait; on a million records, about 0.15 s). Scan and
// LoadState each read one badger read transaction (a consistent view); Scan hands fn a fresh Record each
// time, which fn may keep, and fn may call the Journal's methods. Close
// waits for the calls in progress, then fails every later call with
// ErrClosed. Options.OnSync runs on the committer after each sync (for
// metrics); Usage reads the directory and statfs without any lock.
//
// # Durability
//
// badger is opened with SyncWrites=false and every batch is followed by
// an explicit db.Sync(): a transaction commit returns once its entries are
// in the active memtable and its write-ahead log, a file that badger writes
// through a shared mmap; db.Sync msyncs that log and the value log. So an
// Append that returned nil had its records in the log before the msync
// that returned nil, and they are on the device.
//
// db.Sync syncs only the active memtable's log. Had another commit rotated
// the memtable between a batch's commit and its sync, the batch would sit
// in a retired log that nothing syncs until badger flushes it to a table.
// commitMu closes that window: the committer holds it exclusively from a
// transaction's commit to the end of the sync that covers it, and every
// other writer holds it shared around its commit, so no commit falls in
// between. For the same reason a batch larger than one transaction is
// synced after each of its transactions.
//
// Complete and DropBefore are not synced, by design: losing them
// in a crash only makes recovery report an intent as in flight, or keeps
// records that a later DropBefore removes again (DropPrefix flushes the
// memtables, so in practice DropBefore is durable once it returns). Their commits still
// survive the death of the process (SIGKILL, a panic), because the log is
// a shared mapping whose pages are in the page cache; only a crash of the
// machine can lose them.
//
// A failed sync poisons the journal: every later Append and SaveState
// fails with an error wrapping the first failure. After a failed msync
// the kernel may have dropped log pages that later syncs would not
// rewrite, and badger's replay stops at the first hole in the log, so
// nothing written after the failure could honestly be called durable.
// The daemon has to close and reopen the journal.
//
// badger flattens the errors of its file operations into strings. So that
// errors.Is(err, syscall.ENOSPC) (or EIO, EDQUOT, EROFS) still works on an
// error that reaches a caller, the package recovers the errno from the
// message when badger dropped it (see withErrno).
//
// # Free space and SIGBUS
//
// badger writes its logs and tables through mmap'd files that it creates
// sparse. Storing into a page that has no block behind it on a full file
// system raises SIGBUS, which kills the daemon instead of failing the one
// operation, and would leave the FUSE mount dead. So before each batch
// (and before each unsynced write) the journal checks with statfs that
// the free space of its file system is at least Options.ReserveBytes
// (64 MiB unless set) and otherwise fails with an error wrapping
// syscall.ENOSPC, writing nothing. The reserve also has to cover what
// badger writes in the background (flushes and compactions), which no
// check can gate.
//
// # Key schema
//
// Every key of the database is built by exactly one of the constructors
// below, and nowhere else. Numbers are big-endian so that badger's
// bytewise key order is (period, seq) order, which Scan and DropBefore
// rely on:
//
//	'm' + name                   metadata: "format" (format version, one
//	                             byte), "backing" (absolute path of
//	                             BACKING), "state" (checkpoint.State,
//	                             versioned binary), "seq" (next Seq,
//	                             8 bytes BE)
//	'i' + period(8 BE) + seq(8 BE)   intent record (versioned binary, see
//	                             appendRecord; version 2 adds the
//	                             inodes of a namespace change's
//	                             directories, and only such a record
//	                             is written as version 2, so an older
//	                             hsmfs reads every other record and
//	                             reports the journal damaged at the
//	                             first rename or removal it meets;
//	                             version 3 adds a derived record's
//	                             consumer and a chunk's names, which
//	                             versions 1 and 2 kept in path2 and
//	                             which a reader moves into the typed
//	                             fields, legacyFields);
//	                             Period and Seq live in the key only. A roster
//	                             (checkpoint.OpRoster) is a header record
//	                             and chunk records (FlagNames) that hold
//	                             its names, at most 32 KiB each
//	'c' + period(8 BE) + seq(8 BE)   completion marker of that intent,
//	                             empty value
//	'h' + name                   a row of the HSM's table (PutTable):
//	                             tiers, file states and tier objects to
//	                             collect, encoded by internal/hsm; never
//	                             dropped by a bless
//
// The value formats carry their own version byte so that a later hsmfs
// can change one of them without a new format version of the whole
// journal; an unknown version is reported as ErrDamaged.
package journal
