package journal

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Value format versions. A reader that meets another version reports
// ErrDamaged rather than guessing.
const (
	recordVersion = 1
	stateVersion  = 1
	// formatVersion is the version of the journal as a whole (key schema
	// and metadata), stored under metaKey(metaFormat).
	formatVersion = 1
)

// maxPathLen bounds the length fields that decodeRecord accepts, so that a
// damaged length cannot ask for an absurd allocation. PATH_MAX is 4096;
// the margin costs nothing.
const maxPathLen = 1 << 16

// appendRecord appends the value encoding of r (everything but Period and
// Seq, which are in the key):
//
//	version(1) op(1) flags(1) uvarint(ino) uvarint(run) varint(time)
//	uvarint(len(path)) path uvarint(len(path2)) path2
//
// time is Time.UnixNano, or 0 for the zero Time; the instant of the Unix
// epoch itself therefore reads back as the zero Time.
func appendRecord(b []byte, r *checkpoint.Record) []byte {
	b = append(b, recordVersion, byte(r.Op), r.Flags)
	b = binary.AppendUvarint(b, r.Ino)
	b = binary.AppendUvarint(b, r.Run)
	var t int64
	if !r.Time.IsZero() {
		t = r.Time.UnixNano()
	}
	b = binary.AppendVarint(b, t)
	b = binary.AppendUvarint(b, uint64(len(r.Path)))
	b = append(b, r.Path...)
	b = binary.AppendUvarint(b, uint64(len(r.Path2)))
	b = append(b, r.Path2...)
	return b
}

// recordSizeHint is a generous estimate of the encoded size of r, to size
// the batch buffer once.
func recordSizeHint(r *checkpoint.Record) int {
	return 3 + 3*binary.MaxVarintLen64 + 2*binary.MaxVarintLen32 + len(r.Path) + len(r.Path2)
}

// decodeRecord fills r from a value written by appendRecord. It never
// panics on garbage; every failure wraps ErrDamaged. The strings are
// copied, so v may be reused afterwards.
func decodeRecord(v []byte, r *checkpoint.Record) error {
	if len(v) < 3 {
		return fmt.Errorf("%w: intent record of %d bytes is too short", ErrDamaged, len(v))
	}
	if v[0] != recordVersion {
		return fmt.Errorf("%w: intent record version %d unknown", ErrDamaged, v[0])
	}
	r.Op = checkpoint.Op(v[1])
	if !r.Op.Valid() {
		return fmt.Errorf("%w: intent record with unknown op %d", ErrDamaged, v[1])
	}
	r.Flags = v[2]
	d := decoder{b: v[3:]}
	r.Ino = d.uvarint()
	r.Run = d.uvarint()
	t := d.varint()
	r.Path = d.str()
	r.Path2 = d.str()
	if d.err != nil {
		return fmt.Errorf("%w: intent record: %s", ErrDamaged, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: intent record has %d trailing bytes", ErrDamaged, len(d.b))
	}
	if t == 0 {
		r.Time = time.Time{}
	} else {
		r.Time = time.Unix(0, t)
	}
	return nil
}

// decoder reads varints and strings, remembering the first error so that
// the caller checks once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxPathLen || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("string length %d exceeds the %d bytes left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// stateLen is the size of an encoded State:
//
//	version(1) Current(8) LastQuery(8) LastBlessed(8) Run(8) Clean(1) RecoveredAt(8)
//	LastUncleanRun(8)
//
//	NotQueries: count(4) then count × period(8)
//
// A state without the trailing LastUncleanRun (stateLenV1) reads as 0,
// one without NotQueries as an empty list.
const (
	stateLenV1 = 1 + 8*4 + 1 + 8
	stateLen   = stateLenV1 + 8
)

func encodeState(st checkpoint.State) []byte {
	b := make([]byte, 0, stateLen)
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint64(b, st.Current)
	b = binary.BigEndian.AppendUint64(b, st.LastQuery)
	b = binary.BigEndian.AppendUint64(b, st.LastBlessed)
	b = binary.BigEndian.AppendUint64(b, st.Run)
	clean := byte(0)
	if st.Clean {
		clean = 1
	}
	b = append(b, clean)
	b = binary.BigEndian.AppendUint64(b, st.RecoveredAt)
	b = binary.BigEndian.AppendUint64(b, st.LastUncleanRun)
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.NotQueries)))
	for _, p := range st.NotQueries {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return b
}

func decodeState(v []byte) (checkpoint.State, error) {
	var st checkpoint.State
	if len(v) < 1 || v[0] != stateVersion {
		return st, fmt.Errorf("%w: state has unknown version (%d bytes)", ErrDamaged, len(v))
	}
	if len(v) != stateLenV1 && len(v) < stateLen {
		return st, fmt.Errorf("%w: state of %d bytes, want %d", ErrDamaged, len(v), stateLen)
	}
	if v[33] > 1 {
		return st, fmt.Errorf("%w: state has Clean byte %d", ErrDamaged, v[33])
	}
	st.Current = binary.BigEndian.Uint64(v[1:])
	st.LastQuery = binary.BigEndian.Uint64(v[9:])
	st.LastBlessed = binary.BigEndian.Uint64(v[17:])
	st.Run = binary.BigEndian.Uint64(v[25:])
	st.Clean = v[33] == 1
	st.RecoveredAt = binary.BigEndian.Uint64(v[34:])
	if len(v) >= stateLen {
		st.LastUncleanRun = binary.BigEndian.Uint64(v[42:])
	}
	if rest := v[min(len(v), stateLen):]; len(rest) > 0 {
		if len(rest) < 4 {
			return st, fmt.Errorf("%w: state has a truncated list", ErrDamaged)
		}
		n := int(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if len(rest) != 8*n {
			return st, fmt.Errorf("%w: state list of %d periods in %d bytes", ErrDamaged, n, len(rest))
		}
		for i := 0; i < n; i++ {
			st.NotQueries = append(st.NotQueries, binary.BigEndian.Uint64(rest[8*i:]))
		}
	}
	return st, nil
}
