// Package checkpoint is the period state machine of hsmfs: it turns
// modifications into durable intents, groups them in periods, and runs
// queries and blesses. It knows neither FUSE nor badger: the fs package
// calls it, and it writes through the Store interface (implemented by
// journal) and looks at the tracked tree through Backing (implemented by
// fs). A test enforces the layering.
//
// # What it owns
//
//   - the current period, and the in-flight count of each period
//     (period.go: an SRCU-like handover, lock-free on the hot path);
//   - the in-memory dedup set of each period: a modification whose
//     (op, path, inode) already has a durable intent in the current period
//     needs no new one, so repeated writes cost no sync;
//   - the files open for writing (handle.go), which count as modified
//     for as long as they stay open and are re-recorded by every query;
//   - the durable State (current period, last query, last bless, run,
//     clean flag, recovery period, the named consumers' cursors; its
//     methods in state.go) and recovery after an unclean end; every synced
//     write goes through Tracker.append (append.go);
//   - the query (query.go, and its stages in query_stages.go), with the
//     old names beneath renamed directories (by inode, oldnames.go; by
//     path where the inodes are not all known, renames.go), every name of a
//     file with several links (links.go), the valve that answers full
//     rather than pass the bound (whole.go), and the named consumers
//     (consumers.go); path helpers in paths.go;
//   - the records of changes found at mount (RecordOutside; the finding
//     is internal/outside's);
//   - what it tells about itself (stats.go): .hsm/status, and for the
//     metrics record counters (one atomic add per journal write, never
//     per modification), the in-flight and open-for-write counts, the
//     pending paths (a scan of the journal) and the OnQuery and OnBless
//     hooks. It knows nothing of Prometheus.
//
// # Concurrency
//
// Begin, End, OpenWrite, Touch and Release may be called from any number
// of goroutines. Query, Checkpoint, Bless, Close and the consumer changes
// serialise on qmu.
// Lock order: qmu → handlesMu → dedup shard mu → entry mu; stateMu and
// gcMu are leaves (tracker.go has the whole list, with the roster and
// census locks). No lock but qmu, a roster's mu and an
// entry's censusMu is held across a Store call that syncs.
//
// # Durability argument
//
//  1. Begin (and OpenWrite, Touch) returns only after Store.Append of an
//     intent covering the path returned nil, i.e. after the journal's
//     sync; or after finding such an intent already durable in the same
//     period (the dedup entry is published only once its Append
//     returned: joiners wait on entry.ready). The caller modifies BACKING
//     only after that. So every modification is covered by a durable
//     intent of the period it entered (D1).
//  2. A query starts P with State.Current = P saved durably first, then
//     waits for every modification that entered an earlier period to
//     End. Files open for writing are re-recorded in P (durably) before
//     the answer is built, so writes through them that the query did not
//     wait for (including mmap and kernel-passthrough writes that hsmfs
//     never sees) are covered by a record of P.
//  3. The answer lists every path of every record with period ≥
//     LastBlessed. LastQuery = P is saved durably before it is returned.
//  4. Bless(id) requires id ≤ LastQuery, calls syncfs on BACKING, then
//     saves LastBlessed = id durably, with BlessSeq = Store.LastSeq(),
//     which tells the old names what the copy may hold (oldnames.go);
//     only then are records below id
//     deleted, and only below the lowest last bless of every consumer
//     (keepFrom, state.go), in the background (a crash restarts the
//     deletion, and a consumer's queries never read below its own last
//     bless anyway). Records of period ≥
//     id — including everything recorded after query id started — stay.
//     A bless of a query answered before the last crash is refused: the
//     crash may have undone in BACKING what the consumer copied.
//  5. After a crash, New keeps every record, starts a new period above
//     State.Current (so above every record, by 2), and reports intents of
//     earlier runs without a completion as in flight. Directory intents of
//     runs that ended uncleanly are answered with every entry of the
//     directory, and rosters with every name they hold
//     (coarse.go), and every entry beneath a directory made in the
//     period, which the censuses of its ancestor's directory
//     intent do not hold (newdirs.go); whatever a query derives from
//     BACKING rather than from a record is recorded before the answer is
//     returned (query.go, recordDerived).
//  6. A query takes the paths of the files open for writing only after
//     the caller's tree has applied every modification that already
//     ended (SetPathSettler: go-fuse moves a renamed inode after Rename
//     returns).
//
// Hence a path modified in period T is in every answer from the first
// query that starts a period > T until a bless of an id > T, which
// requires a query that listed it (D2, D3). docs/design.md walks through
// every crash point.
package checkpoint
