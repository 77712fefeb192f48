package journal

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Usage is the space that a journal takes, and the room left for it.
type Usage struct {
	// Bytes allocated on disk (st_blocks), by kind of badger file.
	// badger creates its logs sparse and large, so their apparent size
	// says little; the blocks are what fills the file system.
	Tables    int64 // LSM tables (*.sst)
	ValueLog  int64 // value log (*.vlog)
	Memtables int64 // write-ahead logs of the memtables (*.mem)
	Other     int64 // MANIFEST, KEYREGISTRY, lock files, ...
	// Free is the free space of the journal's file system for an
	// unprivileged user (statfs f_bavail), as the reserve check sees it.
	Free int64
	// Reserve is the free space below which writes fail with ENOSPC
	// (Options.ReserveBytes); 0 when the check is disabled.
	Reserve int64
}

// Usage reads the journal directory and statfs. It takes no lock and does
// not touch badger, so it may run at any time, concurrently with writes
// (a file that badger removes meanwhile is skipped). It costs one stat
// per file of the directory (a few dozen).
func (j *Journal) Usage() (Usage, error) {
	u := Usage{Reserve: max(j.reserve, 0)}
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return Usage{}, fmt.Errorf("journal %s: usage: %w", j.dir, err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue // removed meanwhile (compaction, GC), or not a file
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		n := st.Blocks * 512 // st_blocks is in 512-byte units, whatever the block size
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".sst"):
			u.Tables += n
		case strings.HasSuffix(name, ".vlog"):
			u.ValueLog += n
		case strings.HasSuffix(name, ".mem"):
			u.Memtables += n
		default:
			u.Other += n
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(j.dir, &sfs); err != nil {
		return Usage{}, fmt.Errorf("journal %s: statfs: %w", j.dir, err)
	}
	u.Free = int64(sfs.Bavail) * int64(sfs.Bsize)
	return u, nil
}

// Space reads the free space of the journal's file system (statfs only,
// no lock): free bytes, the reserve, and whether free space is below the
// reserve, when every modification fails with ENOSPC (checkSpace). A
// statfs that fails reads as low: the writes would fail too.
func (j *Journal) Space() (free, reserve uint64, low bool) {
	reserve = uint64(max(j.reserve, 0))
	var sfs unix.Statfs_t
	if err := unix.Statfs(j.dir, &sfs); err != nil {
		return 0, reserve, true
	}
	free = sfs.Bavail * uint64(sfs.Bsize)
	return free, reserve, j.reserve >= 0 && free < reserve
}
