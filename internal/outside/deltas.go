package outside

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"sync"
)

// Deltas is the log of the names changed through the mount since the
// index was taken (JOURNAL.tree.log), in the order they changed: a name
// made, or made another inode, (directory inode, name, inode), and a
// name removed (an unlink, a rmdir, the old name of a rename).
//
// After a crash the index is the one of that run's mount, and the check
// replays the log on it (ReadDeltas): it then shows each name as the
// log last left it, at or after the last bless. A copy holds the
// tree as it was at its last blessed query, and every change since that
// query has a record that the bless kept, which the journal lists again;
// so the check, comparing the tree now with the replayed one, needs to
// list only what changed after the end of the log: around hsmfs, or
// through the mount after the last Sync. Without the replay the check
// would compare with the index of the mount, and a directory renamed
// through the mount and moved back around hsmfs after a bless would be
// found at its indexed name and inode, with nothing beneath it listed,
// although the copy holds it under the new name only.
//
// Order: the kernel holds a directory's lock across every request that
// makes or removes one of its names (both directories' for a rename),
// and hsmfs logs before it answers the request, so the changes of each
// name are logged in the order they happened, which is all the replay
// needs. A torn tail can cut a rename's two records apart, which leaves a
// directory under both names: the check lists more, never less.
//
// Appends are buffered (one mutex; a write(2) each 64 KiB); Sync,
// called by every bless before it discards anything (through the
// backing's syncfs), makes them durable. Each record carries a CRC-32C;
// reading stops at the first torn or damaged record, which can only be
// one written after the last Sync.
//
// The log begins with the ID of its index. A new index is written first
// and its empty log after it, both before the mount goes live or after it
// is gone; a crash in between leaves the new index with the old log,
// which names another index and is not replayed (nothing changed through
// the mount between the two).
type Deltas struct {
	mu  sync.Mutex // guards w, err and rec
	f   *os.File
	w   *bufio.Writer
	err error  // the first write error: Sync reports it
	rec []byte // the record being built, reused: Add allocates nothing
}

// DeltasPath is where the log of a journal lives.
func DeltasPath(journal string) string { return journal + ".tree.log" }

// OpenDeltas starts an empty log at path for the index x, which was just
// written.
func OpenDeltas(path string, x *Index) (*Deltas, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tree log: %w", err)
	}
	d := &Deltas{f: f, w: bufio.NewWriterSize(f, 64<<10)}
	d.add(kindIndex, x.ID, "", 0)
	if err := d.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// The kinds of record of the log.
const (
	kindFile  byte = iota // a name made, or made another inode: a file
	kindDir               // the same, a directory
	kindGone              // a name removed
	kindIndex             // the first record: the ID of the index (as dir)
)

// Add logs that directory dir now holds name as inode ino.
func (d *Deltas) Add(dir uint64, name string, ino uint64, isDir bool) {
	kind := kindFile
	if isDir {
		kind = kindDir
	}
	d.add(kind, dir, name, ino)
}

// Gone logs that directory dir holds name no more.
func (d *Deltas) Gone(dir uint64, name string) {
	d.add(kindGone, dir, name, 0)
}

func (d *Deltas) add(kind byte, dir uint64, name string, ino uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return
	}
	// The header (length, CRC) first, filled in once the body is built.
	rec := append(d.rec[:0], make([]byte, 8)...)
	rec = binary.AppendUvarint(rec, dir)
	rec = binary.AppendUvarint(rec, ino)
	rec = append(rec, kind)
	rec = append(rec, name...)
	body := rec[8:]
	binary.LittleEndian.PutUint32(rec[:4], uint32(len(body)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32.Checksum(body, castagnoli))
	d.rec = rec
	if _, err := d.w.Write(rec); err != nil {
		d.err = err
	}
}

// Sync makes every Add and Gone so far durable. The fsync runs without
// the lock, so that the operations that log names do not wait for it: it
// covers everything that the flush wrote. Syncs must not run at once (a
// writeback error is reported to one fsync only): the one caller, bless,
// holds the tracker's query lock. After an error every Sync fails, and
// so every bless, until the next mount.
func (d *Deltas) Sync() error {
	d.mu.Lock()
	if d.err == nil {
		d.err = d.w.Flush()
	}
	err := d.err
	d.mu.Unlock()
	if err == nil {
		if err = d.f.Sync(); err != nil {
			d.mu.Lock()
			if d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
		}
	}
	if err != nil {
		return fmt.Errorf("tree log: %w", err)
	}
	return nil
}

// Close syncs and closes the log.
func (d *Deltas) Close() error {
	err := d.Sync()
	return errors.Join(err, d.f.Close())
}

// ReadDeltas replays the log at path on x, in its order. A log that is
// missing, or that belongs to another index, changes nothing.
func ReadDeltas(path string, x *Index) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tree log: %w", err)
	}
	r := replay{x: x, dirs: make(map[uint64]map[string]Ent)}
	for first := true; len(data) >= 8; first = false {
		n := int(binary.LittleEndian.Uint32(data[:4]))
		if n > len(data)-8 || crc32.Checksum(data[8:8+n], castagnoli) != binary.LittleEndian.Uint32(data[4:8]) {
			break // torn after the last Sync
		}
		rec := bytes.NewReader(data[8 : 8+n])
		data = data[8+n:]
		dir, err1 := binary.ReadUvarint(rec)
		ino, err2 := binary.ReadUvarint(rec)
		kind, err3 := rec.ReadByte()
		name, _ := io.ReadAll(rec)
		if err1 != nil || err2 != nil || err3 != nil {
			break
		}
		if first != (kind == kindIndex) || kind == kindIndex && dir != x.ID {
			return nil // the log of another index (or of an older hsmfs)
		}
		if kind == kindIndex {
			continue
		}
		names := r.names(dir)
		if kind == kindGone {
			delete(names, string(name))
		} else {
			names[string(name)] = Ent{Name: string(name), Ino: ino, Dir: kind == kindDir}
		}
	}
	r.done()
	return nil
}

// replay holds, by name, the directories that the log changes.
type replay struct {
	x    *Index
	dirs map[uint64]map[string]Ent
}

func (r *replay) names(dir uint64) map[string]Ent {
	if m, ok := r.dirs[dir]; ok {
		return m
	}
	m := make(map[string]Ent, len(r.x.Dirs[dir]))
	for _, e := range r.x.Dirs[dir] {
		m[e.Name] = e
	}
	r.dirs[dir] = m
	return m
}

// done writes the changed directories back into the index.
func (r *replay) done() {
	for dir, m := range r.dirs {
		es := make([]Ent, 0, len(m))
		for _, e := range m {
			es = append(es, e)
		}
		r.x.Dirs[dir] = es
	}
}

// Replayed is the index at indexPath with the log at logPath replayed on
// it, as the index of the tree at the moment w, with a new ID: the index
// of a clean end. Every name made or removed through the mount is in the
// log, in the order it changed (see Deltas), so once the mount is gone
// the replayed index shows the tree as it is, as a walk would, in the
// time it takes to read and write the index rather than to walk BACKING
// (a minute and more at ten million entries). Only the directories that
// the root still reaches are kept: a removed directory's block would
// otherwise stay in every later index.
func Replayed(indexPath, logPath string, w int64) (*Index, error) {
	x, err := Load(indexPath)
	if err != nil {
		return nil, err
	}
	if x.Root == 0 {
		return nil, fmt.Errorf("tree index %s: format 1 has no root", indexPath)
	}
	if err := ReadDeltas(logPath, x); err != nil {
		return nil, err
	}
	reached := make(map[uint64][]Ent, len(x.Dirs))
	queue := []uint64{x.Root}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if _, ok := reached[dir]; ok {
			continue
		}
		es := x.Dirs[dir]
		reached[dir] = es
		for _, e := range es {
			if e.Dir && e.Ino != 0 { // 0: made, but not looked at (listed whatever it holds)
				queue = append(queue, e.Ino)
			}
		}
	}
	x.Dirs, x.W, x.ID = reached, w, rand.Uint64()|1
	return x, nil
}
