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
//	version(1) Current(8) LastQuery(8) LastBlessed(8) Run(8) flags(1) RecoveredAt(8)
//	LastUncleanRun(8)
//
//	flags: 1 Clean, 2 Full (the default consumer's). Before Full existed
//	the byte was Clean alone (0 or 1), so older journals read the same;
//	an older hsmfs refuses a state with Full set as damaged rather than
//	forget that a full copy is owed.
//
//	NotQueries: count(4) then count × period(8)
//
// A state without the trailing LastUncleanRun (stateLenV1) reads as 0,
// one without NotQueries as an empty list.
const (
	stateLenV1 = 1 + 8*4 + 1 + 8
	stateLen   = stateLenV1 + 8

	stateClean = 1
	stateFull  = 2
)

func encodeState(st checkpoint.State) []byte {
	b := make([]byte, 0, stateLen)
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint64(b, st.Current)
	b = binary.BigEndian.AppendUint64(b, st.LastQuery)
	b = binary.BigEndian.AppendUint64(b, st.LastBlessed)
	b = binary.BigEndian.AppendUint64(b, st.Run)
	var flags byte
	if st.Clean {
		flags |= stateClean
	}
	if st.Full {
		flags |= stateFull
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, st.RecoveredAt)
	b = binary.BigEndian.AppendUint64(b, st.LastUncleanRun)
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.NotQueries)))
	for _, p := range st.NotQueries {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	if len(st.Consumers) > 0 {
		b = encodeConsumers(b, st.Consumers)
	}
	return b
}

// encodeConsumers appends the named consumers' cursors after the
// NotQueries list (a state without any ends with that list): a count,
// then per consumer its name (16-bit length), LastQuery, LastBlessed,
// RecoveredAt, a flags byte (1 Full, 2 Reset), Added, QueryTime,
// BlessTime, and its Queries (a 32-bit count, then the periods).
func encodeConsumers(b []byte, cs []checkpoint.Consumer) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(cs)))
	for _, c := range cs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.Name)))
		b = append(b, c.Name...)
		for _, v := range []uint64{c.LastQuery, c.LastBlessed, c.RecoveredAt} {
			b = binary.BigEndian.AppendUint64(b, v)
		}
		var fl byte
		if c.Full {
			fl |= 1
		}
		if c.Reset {
			fl |= 2
		}
		b = append(b, fl)
		for _, v := range []int64{c.Added, c.QueryTime, c.BlessTime} {
			b = binary.BigEndian.AppendUint64(b, uint64(v))
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(c.Queries)))
		for _, p := range c.Queries {
			b = binary.BigEndian.AppendUint64(b, p)
		}
	}
	return b
}

func decodeConsumers(v []byte) ([]checkpoint.Consumer, error) {
	bad := fmt.Errorf("%w: state has a truncated consumer list", ErrDamaged)
	take := func(n int) ([]byte, bool) {
		if len(v) < n {
			return nil, false
		}
		x := v[:n]
		v = v[n:]
		return x, true
	}
	u64 := func() (uint64, bool) {
		x, ok := take(8)
		if !ok {
			return 0, false
		}
		return binary.BigEndian.Uint64(x), true
	}
	x, ok := take(4)
	if !ok {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint32(x))
	var cs []checkpoint.Consumer
	for i := 0; i < n; i++ {
		var c checkpoint.Consumer
		l, ok := take(2)
		if !ok {
			return nil, bad
		}
		name, ok := take(int(binary.BigEndian.Uint16(l)))
		if !ok {
			return nil, bad
		}
		c.Name = string(name)
		var vals [6]uint64
		for k := range 3 {
			if vals[k], ok = u64(); !ok {
				return nil, bad
			}
		}
		fl, ok := take(1)
		if !ok || fl[0] > 3 {
			return nil, bad
		}
		for k := 3; k < 6; k++ {
			if vals[k], ok = u64(); !ok {
				return nil, bad
			}
		}
		c.LastQuery, c.LastBlessed, c.RecoveredAt = vals[0], vals[1], vals[2]
		c.Full, c.Reset = fl[0]&1 != 0, fl[0]&2 != 0
		c.Added, c.QueryTime, c.BlessTime = int64(vals[3]), int64(vals[4]), int64(vals[5])
		q, ok := take(4)
		if !ok {
			return nil, bad
		}
		for j := 0; j < int(binary.BigEndian.Uint32(q)); j++ {
			p, ok := u64()
			if !ok {
				return nil, bad
			}
			c.Queries = append(c.Queries, p)
		}
		cs = append(cs, c)
	}
	if len(v) != 0 {
		return nil, fmt.Errorf("%w: state has %d bytes after its consumers", ErrDamaged, len(v))
	}
	return cs, nil
}

func decodeState(v []byte) (checkpoint.State, error) {
	var st checkpoint.State
	if len(v) < 1 || v[0] != stateVersion {
		return st, fmt.Errorf("%w: state has unknown version (%d bytes)", ErrDamaged, len(v))
	}
	if len(v) != stateLenV1 && len(v) < stateLen {
		return st, fmt.Errorf("%w: state of %d bytes, want %d", ErrDamaged, len(v), stateLen)
	}
	if v[33]&^(stateClean|stateFull) != 0 {
		return st, fmt.Errorf("%w: state has flags byte %d", ErrDamaged, v[33])
	}
	st.Current = binary.BigEndian.Uint64(v[1:])
	st.LastQuery = binary.BigEndian.Uint64(v[9:])
	st.LastBlessed = binary.BigEndian.Uint64(v[17:])
	st.Run = binary.BigEndian.Uint64(v[25:])
	st.Clean, st.Full = v[33]&stateClean != 0, v[33]&stateFull != 0
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
		if len(rest) < 8*n {
			return st, fmt.Errorf("%w: state list of %d periods in %d bytes", ErrDamaged, n, len(rest))
		}
		for i := 0; i < n; i++ {
			st.NotQueries = append(st.NotQueries, binary.BigEndian.Uint64(rest[8*i:]))
		}
		if rest = rest[8*n:]; len(rest) > 0 {
			cs, err := decodeConsumers(rest)
			if err != nil {
				return st, err
			}
			st.Consumers = cs
		}
	}
	return st, nil
}
