package hsm

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Flags are a file's HSM states, named as Lustre HSM names them. A file
// without a row is "exists" only (resident, never archived).
type Flags uint16

const (
	// Archived: a complete, verified copy of the file's content is in
	// its tier (File.Tier, File.Object).
	Archived Flags = 1 << iota
	// Released: the local blocks are freed; the content is in the tier
	// only. Size, mode, owner, times, xattrs and links stay.
	Released
	// Dirty: the file was opened for writing (or truncated) since its
	// archive: the tier copy is not its content any more.
	Dirty
	// Lost: the tier copy could not be read back (missing object, wrong
	// size or checksum); a released file in this state cannot be
	// restored.
	Lost
	// NoRelease and NoArchive are the user's marks (hsm set).
	NoRelease
	NoArchive
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{Archived, "archived"}, {Released, "released"}, {Dirty, "dirty"},
	{Lost, "lost"}, {NoRelease, "norelease"}, {NoArchive, "noarchive"},
}

// Names lists the states set in f, in Lustre's order.
func (f Flags) Names() []string {
	var out []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func (f Flags) String() string {
	if n := f.Names(); len(n) > 0 {
		return strings.Join(n, " ")
	}
	return "exists"
}

// FlagByName is the user-settable flag of name (hsm set/clear).
func FlagByName(name string) (Flags, bool) {
	switch name {
	case "norelease":
		return NoRelease, true
	case "noarchive":
		return NoArchive, true
	}
	return 0, false
}

// Op is a transition that a begin record announces.
type Op string

const (
	OpArchive Op = "archive"
	OpRelease Op = "release"
	OpRestore Op = "restore"
	OpRemove  Op = "remove"
	// OpTruncate: a released file is being truncated to zero; its size
	// settles it after a crash (settleTruncate).
	OpTruncate Op = "truncate"
)

// Pending is a transition's begin record: it is durable before the
// transition touches the tier or the file, and it is cleared by the
// transition's commit (the same row written again). Recovery (load.go)
// finishes or undoes every transition it finds pending.
type Pending struct {
	Op     Op     `json:"op"`
	Tier   uint32 `json:"tier,omitempty"`
	Object string `json:"object,omitempty"` // archive: the object being written
}

// File is the durable HSM state of one file of BACKING: all its hard
// links, as it is keyed by the inode. Ino and Btime together say which
// file it is: an inode number that the file system hands out again after
// the file was deleted comes with another birth time.
type File struct {
	Ino   uint64 `json:"ino"`
	Btime int64  `json:"btime"` // birth time in ns (0 where the file system keeps none)
	// Handle is the file's handle (name_to_handle_at: type, then bytes),
	// by which a sweep at mount finds the files that are gone
	// (sweep.go).
	Handle []byte `json:"handle,omitempty"`
	Flags  Flags  `json:"flags"`
	// The committed archive: its tier and object, and the version of the
	// file that it holds (size, mtime in ns) with the content's CRC-32C
	// (hex): the checksum that S3 and GCS keep too, computed by the CPU at
	// over 20 GB/s, so that verifying costs an archive and a restore
	// nothing.
	Tier   uint32 `json:"tier,omitempty"`
	Object string `json:"object,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Mtime  int64  `json:"mtime,omitempty"`
	Sum    string `json:"crc32c,omitempty"`
	// Archived is when the archive committed (unix seconds).
	ArchivedAt int64    `json:"archived_at,omitempty"`
	Pending    *Pending `json:"pending,omitempty"`
	// OpenedAt is when the file was last opened through this mount (unix
	// ns, 0: not since the mount), for the release policy's least
	// recently opened first. State fills it in; it is not stored.
	OpenedAt int64 `json:"-"`
	// Moved is how far a running archive or restore has come (bytes);
	// State fills it in.
	Moved int64 `json:"-"`
}

// TierRow is a tier as the table keeps it.
type TierRow struct {
	ID  uint32 `json:"id"`
	URL string `json:"url"`
}

// The table's row names. Values are JSON: the table is small (one row
// per archived file), read once at mount, and readable in a dump.
const (
	rowTier   = "t/" // + tier id, decimal: TierRow
	rowFile   = "f/" // + inode, 16 hex digits: File
	rowOrphan = "o/" // + tier id + "/" + object: a tier object to delete
)

func tierRowName(id uint32) string  { return rowTier + strconv.FormatUint(uint64(id), 10) }
func fileRowName(ino uint64) string { return fmt.Sprintf("%s%016x", rowFile, ino) }
func orphanRowName(tier uint32, object string) string {
	return rowOrphan + strconv.FormatUint(uint64(tier), 10) + "/" + object
}

// parseOrphan splits an orphan row's name.
func parseOrphan(name string) (uint32, string, bool) {
	id, obj, ok := strings.Cut(strings.TrimPrefix(name, rowOrphan), "/")
	n, err := strconv.ParseUint(id, 10, 32)
	return uint32(n), obj, ok && err == nil && obj != ""
}

// Row is one row of the table to write; Value nil deletes it.
type Row struct {
	Name  string
	Value []byte
}

func fileRow(f *File) Row {
	if f.Flags == 0 && f.Pending == nil {
		return Row{Name: fileRowName(f.Ino)}
	}
	v, _ := json.Marshal(f)
	return Row{Name: fileRowName(f.Ino), Value: v}
}

func orphanRow(tier uint32, object string) Row {
	return Row{Name: orphanRowName(tier, object), Value: []byte{1}}
}

// Store keeps the table durably (journal.Journal's PutTable and
// ScanTable, adapted by the daemon).
type Store interface {
	// PutRows writes the rows in one transaction and returns once they
	// are durable.
	PutRows(rows []Row) error
	// ScanRows calls fn for every row, in name order.
	ScanRows(fn func(name string, value []byte) error) error
}

// castagnoli is CRC-32C's table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)
