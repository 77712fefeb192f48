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
	"path/filepath"
)

// The index file (JOURNAL.tree), little-endian:
//
//	"HSMFSTR2"  magic and version
//	W           int64, unix nanoseconds
//	dev         uint64, the device of BACKING
//	id          uint64, random: the log of names names the index it
//	            belongs to (deltas.go)
//	root        uint64, the inode of BACKING's root
//	dirs        uint64, the number of directory blocks
//	then per directory: its inode (uvarint), its entry count (uvarint),
//	and per entry: inode (uvarint), 1 if a directory else 0 (byte),
//	name length (uvarint), name
//	CRC-32C     uint32 of everything before it
//
// A name costs its length plus about 6 bytes; the e2e bench reports the
// bytes per entry.

// magic is the current version; magicV1 (no id) is still read.
const (
	magic   = "HSMFSTR2"
	magicV1 = "HSMFSTR1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrNoIndex: there is no index file (a first mount, or the previous run
// skipped the check).
var ErrNoIndex = errors.New("no tree index")

// Ent is one name of a directory.
type Ent struct {
	Name string
	Ino  uint64
	Dir  bool
}

// Index is the tree as it was at some moment at or after W: the names of
// every directory, by the directory's inode number.
type Index struct {
	W    int64
	Dev  uint64
	ID   uint64 // random, never 0 in a new index (Walk)
	Root uint64 // the root directory's inode (0 in an index of format 1)
	Dirs map[uint64][]Ent
}

// Entries counts the names in the index.
func (x *Index) Entries() int {
	n := 0
	for _, es := range x.Dirs {
		n += len(es)
	}
	return n
}

// IndexPath is where the index of a journal lives.
func IndexPath(journal string) string { return journal + ".tree" }

// Load reads an index. A missing file is ErrNoIndex; a damaged one is an
// error (never used).
func Load(path string) (*Index, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoIndex
	}
	if err != nil {
		return nil, fmt.Errorf("tree index: %w", err)
	}
	if len(data) < 4 || crc32.Checksum(data[:len(data)-4], castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, fmt.Errorf("tree index %s is damaged: checksum mismatch", path)
	}
	r := bytes.NewReader(data[:len(data)-4])
	x, err := decode(r)
	if err == nil && r.Len() != 0 {
		err = fmt.Errorf("%d bytes left over", r.Len())
	}
	if err != nil {
		return nil, fmt.Errorf("tree index %s is damaged: %w", path, err)
	}
	return x, nil
}

func decode(r *bytes.Reader) (*Index, error) {
	var hdr [8 + 8 + 8 + 8 + 8 + 8]byte
	if _, err := io.ReadFull(r, hdr[:32]); err != nil {
		return nil, err
	}
	x := &Index{W: int64(binary.LittleEndian.Uint64(hdr[8:])), Dev: binary.LittleEndian.Uint64(hdr[16:]),
		Dirs: make(map[uint64][]Ent)}
	switch string(hdr[:8]) {
	case magic:
		if _, err := io.ReadFull(r, hdr[32:]); err != nil {
			return nil, err
		}
		x.ID = binary.LittleEndian.Uint64(hdr[32:])
		x.Root = binary.LittleEndian.Uint64(hdr[40:])
	case magicV1:
	default:
		return nil, errors.New("not a tree index")
	}
	dirs := binary.LittleEndian.Uint64(hdr[24:])
	for i := uint64(0); i < dirs; i++ {
		ino, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, fmt.Errorf("entry count %d: %v", n, err)
		}
		es := make([]Ent, 0, n)
		for j := uint64(0); j < n; j++ {
			e, err := readEnt(r)
			if err != nil {
				return nil, err
			}
			es = append(es, e)
		}
		x.Dirs[ino] = es
	}
	return x, nil
}

func readEnt(r *bytes.Reader) (Ent, error) {
	ino, err := binary.ReadUvarint(r)
	if err != nil {
		return Ent{}, err
	}
	dir, err := r.ReadByte()
	if err != nil {
		return Ent{}, err
	}
	l, err := binary.ReadUvarint(r)
	if err != nil || l > 4096 {
		return Ent{}, fmt.Errorf("name length: %v", err)
	}
	name := make([]byte, l)
	if _, err := io.ReadFull(r, name); err != nil {
		return Ent{}, err
	}
	return Ent{Name: string(name), Ino: ino, Dir: dir == 1}, nil
}

// Save replaces the index at path durably: a temporary file, synced,
// renamed over it, and the directory synced.
func (x *Index) Save(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("tree index: %w", err)
	}
	h := crc32.New(castagnoli)
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	x.encode(w)
	err = w.Flush()
	if err == nil {
		var sum [4]byte
		binary.LittleEndian.PutUint32(sum[:], h.Sum32())
		_, err = f.Write(sum[:])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tree index: %w", err)
	}
	return nil
}

func (x *Index) encode(w *bufio.Writer) {
	var hdr [48]byte
	copy(hdr[:8], magic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(x.W))
	binary.LittleEndian.PutUint64(hdr[16:], x.Dev)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(x.Dirs)))
	binary.LittleEndian.PutUint64(hdr[32:], x.ID)
	binary.LittleEndian.PutUint64(hdr[40:], x.Root)
	w.Write(hdr[:])
	var buf [binary.MaxVarintLen64]byte
	uv := func(v uint64) { w.Write(buf[:binary.PutUvarint(buf[:], v)]) }
	for ino, es := range x.Dirs {
		uv(ino)
		uv(uint64(len(es)))
		for _, e := range es {
			uv(e.Ino)
			if e.Dir {
				w.WriteByte(1)
			} else {
				w.WriteByte(0)
			}
			uv(uint64(len(e.Name)))
			w.WriteString(e.Name)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
