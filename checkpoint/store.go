package checkpoint

import "time"

// Op is the kind of a modification. The names are what changes.json
// reports in "ops"; the numeric values are stored in the journal and
// must never be renumbered.
type Op uint8

const (
	OpWrite       Op = 1 // write(2), or a regular file opened for writing
	OpTruncate    Op = 2 // truncate, ftruncate, open with O_TRUNC, setattr size
	OpFallocate   Op = 3
	OpCopyRange   Op = 4 // copy_file_range into the file
	OpCreate      Op = 5
	OpMknod       Op = 6
	OpMkdir       Op = 7
	OpSymlink     Op = 8
	OpLink        Op = 9 // Path is the new name, Path2 the existing one
	OpUnlink      Op = 10
	OpRmdir       Op = 11
	OpRename      Op = 12 // Path is the old name, Path2 the new name
	OpChmod       Op = 13
	OpChown       Op = 14
	OpUtimens     Op = 15
	OpSetxattr    Op = 16
	OpRemovexattr Op = 17
	// OpEntries is a directory intent (coarse mode): "the entries of
	// directory Path may change in this period". Fine records of the
	// same period name the entries, unsynced.
	OpEntries Op = 18
	// OpRoster is a roster (coarse mode): "directory Path held
	// these names when its first removal of this period began". The
	// header record carries no names; each following chunk record
	// (FlagNames) carries some in Names. Fine records of the same period
	// name the removals, unsynced (coarse.go).
	OpRoster Op = 19
	// OpOutside: a change made to BACKING around hsmfs, while no hsmfs
	// ran, found by the check at mount (internal/outside).
	OpOutside Op = 20
	opMax     Op = 21
)

var opNames = [opMax]string{
	OpWrite: "write", OpTruncate: "truncate", OpFallocate: "fallocate",
	OpCopyRange: "copy_file_range", OpCreate: "create", OpMknod: "mknod",
	OpMkdir: "mkdir", OpSymlink: "symlink", OpLink: "link", OpUnlink: "unlink",
	OpRmdir: "rmdir", OpRename: "rename", OpChmod: "chmod", OpChown: "chown",
	OpUtimens: "utimens", OpSetxattr: "setxattr", OpRemovexattr: "removexattr",
	OpEntries: "entries", OpRoster: "roster", OpOutside: "outside",
}

func (o Op) String() string {
	if o < opMax && opNames[o] != "" {
		return opNames[o]
	}
	return "unknown"
}

// Valid reports whether o is a known kind.
func (o Op) Valid() bool { return o > 0 && o < opMax }

// Record flags.
const (
	// FlagDir: the object of the modification is a directory. A rename
	// of a directory makes the query list every path beneath the new name.
	FlagDir uint8 = 1 << 0
	// FlagFine: an unsynced fine record, covered by an OpEntries intent
	// on its directory. Its in-flight state is the directory intent's.
	FlagFine uint8 = 1 << 1
	// FlagExchange: a rename with RENAME_EXCHANGE (both names hold a
	// moved object afterwards).
	FlagExchange uint8 = 1 << 2
	// FlagDerived: a path that a query listed without a record of its
	// own (a directory's entry, an old name beneath a renamed
	// directory), recorded so that it stays listed until blessed. With
	// OpEntries it names the path itself, not a directory intent.
	// Consumer names the consumer whose query derived it.
	FlagDerived uint8 = 1 << 3
	// FlagCarried: with FlagDerived and OpRename, a renamed directory
	// that a query carried into its new period (checkpoint/renames.go):
	// Path is the old name, Path2 a later name of it. It is never listed
	// itself.
	FlagCarried uint8 = 1 << 4
	// FlagNames: a chunk of a roster (OpRoster) or of a new directory's
	// census (OpEntries), whose names are in Names (a census chunk with
	// no names says that the directory was empty).
	FlagNames uint8 = 1 << 5
)

// Record is one durable intent: "Path (and Path2) may change in Period".
type Record struct {
	Period uint64
	Seq    uint64 // assigned by the Store, unique and increasing within the journal
	Run    uint64 // the mount generation that wrote it (see State.Run)
	Op     Op
	Flags  uint8
	Ino    uint64 // inode number in BACKING, 0 if unknown
	// Parent and Parent2 are the inode numbers of the directories that
	// hold Path and Path2 (0 if unknown, or for a record that names no
	// entry of a directory), and Ino2 what Path2 held before a rename:
	// the other side of an exchange, or a directory that the rename
	// replaced. They are the edges of the tree that the old names follow
	// (oldnames.go). Only namespace changes carry them.
	Parent, Parent2, Ino2 uint64
	Time                  time.Time
	Path                  string // relative to the mount root, no leading "/"
	Path2                 string // second name (rename target, link source), or ""
	// Consumer is the named consumer whose query derived the record
	// (FlagDerived; "" for the default consumer).
	Consumer string
	// Names are the names of a roster's or census's chunk (FlagNames).
	Names []string
}

// State is the small durable header of the journal.
type State struct {
	// Current is the period that new records go to.
	Current uint64
	// LastQuery is the id of the latest query whose answer was returned.
	LastQuery uint64
	// LastBlessed is the id of the latest completed bless: records of
	// every period below it are discarded (perhaps lazily).
	LastBlessed uint64
	// Run counts mounts; every mount increments it durably.
	Run uint64
	// Clean is true only between a clean unmount and the next mount.
	Clean bool
	// Full: the default consumer must copy the whole tree once (the check
	// at mount could not list what was removed around hsmfs); said in its
	// answers until its next bless. Named consumers have their own.
	Full bool
	// RecoveredAt is the period started by the last recovery after an
	// unclean end, 0 if none is pending. It is reset when a bless at or
	// above it completes.
	RecoveredAt uint64
	// LastUncleanRun is the latest run that did not end cleanly. Its
	// unsynced fine records may be lost, so a query lists the whole
	// content of its directory intents instead.
	LastUncleanRun uint64
	// NotQueries are the periods above LastBlessed that were started by
	// something other than a query (the first mount, a recovery, a
	// checkpoint): blessing them fails, as no query returned them.
	NotQueries []uint64
	// QueryTime and BlessTime are when the default consumer last
	// queried and blessed (unix seconds, 0: never); BlessedBy is who made
	// that bless ("bless ... by WHO"; "" if the bless named no one).
	QueryTime, BlessTime int64
	BlessedBy            string
	// BlessSeq is Store.LastSeq when the default consumer last blessed:
	// every modification whose record has a higher Seq began after the
	// bless, so after the copy it blessed (0: not known). The old names
	// use it (oldnames.go, "relevant edges").
	BlessSeq uint64
	// Consumers are the named consumers' cursors, sorted by name
	// (consumers.go). The default consumer's is the fields above.
	Consumers []Consumer
}

// Store is the durable journal the tracker writes through. journal.Journal
// implements it with badger; checkpoint does not import badger.
//
// Every method is safe for concurrent use.
type Store interface {
	// Append assigns Seq to each record and returns only once all of
	// them are durable on the journal's device (synced). Concurrent
	// callers may share one sync (group commit). On error none of the
	// records may be treated as durable.
	Append(recs []*Record) error
	// Complete marks the intents as completed. It is not synced: a
	// crash may lose it, which only makes recovery report the intent
	// as in flight.
	Complete(period, seq uint64) error
	// Reopen undoes Complete for an intent that a new modification
	// joins (in-memory dedup), and returns once that is durable, so that
	// the modification is reported in flight after any crash.
	Reopen(period, seq uint64) error
	// LoadState returns the durable state; a new journal returns the zero State.
	LoadState() (State, error)
	// SaveState makes st durable before it returns.
	SaveState(st State) error
	// Scan calls fn for every record with Period >= from, in key order
	// (period, then seq), with whether its completion is recorded.
	Scan(from uint64, fn func(r *Record, completed bool) error) error
	// DropBefore deletes every record (and completion) with Period < period.
	DropBefore(period uint64) error
	// Syncs reports how many device syncs the store has done since open.
	Syncs() uint64
	// LastSeq returns a Seq at least that of every record appended, or
	// queued by AppendAsync, before the call (it writes the queue
	// first), and below that of every record appended after it returns.
	LastSeq() (uint64, error)
}

// AsyncStore is a Store that can also append without waiting; it enables
// coarse mode.
type AsyncStore interface {
	// AppendAsync queues records: they are neither durable nor visible
	// when it returns, but every later Scan, Append and SaveState
	// writes them first.
	AppendAsync(recs []*Record)
	// Lost reports whether queued records may have been lost since the
	// store was opened (a write failed).
	Lost() bool
}
