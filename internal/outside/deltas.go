package outside

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// Deltas is the log of names added through the mount since the index was
// taken (JOURNAL.tree.log): (directory inode, name, inode). After a crash
// the index is the one of that run's mount, and a name made through the
// mount since, then copied and blessed, may be in a copy; if it is then
// removed around hsmfs, the check must know the name to list it. The
// check takes each directory's names as the union of the index and the
// log (a name that is gone since is listed once more, harmlessly).
//
// The log also holds the names that a rename through the mount took a
// directory from. Such a copy holds the directory under its new name
// only; moved back around hsmfs, the directory has its indexed name and
// inode again, and its entries their old ctimes, so without the record
// the check would find nothing beneath it to list (a file moved back is
// found by its own ctime).
//
// Appends are buffered (one mutex, no syscall on the hot path); Sync,
// called by every bless before it discards anything (through the
// backing's syncfs), makes them durable. A name added or left after the
// last bless is not in a copy yet, or is in a copy made from an
// unblessed answer, and the journal lists it again after a crash either
// way (and what a walk of a new name found: derived records). The log is
// emptied whenever a new index is written. Each record carries a CRC-32C;
// reading stops at the first torn or damaged record, which can only be
// one written after the last Sync.
type Deltas struct {
	mu  sync.Mutex // guards w, err and rec
	f   *os.File
	w   *bufio.Writer
	err error  // the first write error: Sync reports it
	rec []byte // the record being built, reused: Add allocates nothing
}

// DeltasPath is where the log of a journal lives.
func DeltasPath(journal string) string { return journal + ".tree.log" }

// OpenDeltas starts an empty log at path (a new index was just written).
func OpenDeltas(path string) (*Deltas, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tree log: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("tree log: %w", err)
	}
	return &Deltas{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

// The kinds of record of the log.
const (
	kindFile byte = iota // a name added, of a file
	kindDir              // a name added, of a directory
	kindLeft             // a directory renamed away from a name
)

// Add logs that directory dir now holds name as inode ino.
func (d *Deltas) Add(dir uint64, name string, ino uint64, isDir bool) {
	kind := kindFile
	if isDir {
		kind = kindDir
	}
	d.add(kind, dir, name, ino)
}

// Left logs that a rename took the directory ino from directory dir's
// name.
func (d *Deltas) Left(dir uint64, name string, ino uint64) {
	d.add(kindLeft, dir, name, ino)
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

// Sync makes every Add and Left so far durable. The fsync runs without
// the lock, so that the operations that log names do not wait for it: it
// covers everything that the flush wrote.
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

// ReadDeltas adds the names of the log at path to x, and the names that
// directories left to x.Left (a missing log adds nothing).
func ReadDeltas(path string, x *Index) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tree log: %w", err)
	}
	for len(data) >= 8 {
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
		if kind == kindLeft {
			if x.Left == nil {
				x.Left = make(map[Binding]bool)
			}
			x.Left[Binding{dir, string(name), ino}] = true
			continue
		}
		x.Dirs[dir] = append(x.Dirs[dir], Ent{Name: string(name), Ino: ino, Dir: kind == kindDir})
	}
	return nil
}
