package journal

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// Value format versions. A reader that meets another version reports
// ErrDamaged rather than guessing.
const (
	recordVersion = 1
	// recordVersion2 adds the inodes of a namespace change's directories
	// (Parent, Parent2, Ino2). A record without them is still written as
	// version 1, so that most records stay as small and as readable as
	// before.
	recordVersion2 = 2
	// recordVersion3 adds the typed fields of a derived record (its
	// consumer) and of a roster's or census's chunk (its names), which
	// versions 1 and 2 encoded in path2 (legacyFields). Only such records
	// are written as version 3 (a derived record of the default consumer
	// has none, and stays version 1).
	recordVersion3 = 3
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
//	[version 2 and 3: uvarint(parent) uvarint(parent2) uvarint(ino2)]
//	[version 3: uvarint(len(consumer)) consumer
//	            uvarint(len(names)) {uvarint(len(name)) name}]
//
// time is Time.UnixNano, or 0 for the zero Time; the instant of the Unix
// epoch itself therefore reads back as the zero Time.
func appendRecord(b []byte, r *checkpoint.Record) []byte {
	// Every chunk is version 3, with names or without: an older hsmfs
	// would read a version 1 chunk of an empty directory as a directory
	// intent, and must refuse it instead.
	v3 := r.Consumer != "" || len(r.Names) > 0 || r.Flags&checkpoint.FlagNames != 0
	v2 := v3 || r.Parent != 0 || r.Parent2 != 0 || r.Ino2 != 0
	version := byte(recordVersion)
	switch {
	case v3:
		version = recordVersion3
	case v2:
		version = recordVersion2
	}
	b = append(b, version, byte(r.Op), r.Flags)
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
	if v2 {
		b = binary.AppendUvarint(b, r.Parent)
		b = binary.AppendUvarint(b, r.Parent2)
		b = binary.AppendUvarint(b, r.Ino2)
	}
	if v3 {
		b = binary.AppendUvarint(b, uint64(len(r.Consumer)))
		b = append(b, r.Consumer...)
		b = binary.AppendUvarint(b, uint64(len(r.Names)))
		for _, n := range r.Names {
			b = binary.AppendUvarint(b, uint64(len(n)))
			b = append(b, n...)
		}
	}
	return b
}

// recordSizeHint is a generous estimate of the encoded size of r, to size
// the batch buffer once.
func recordSizeHint(r *checkpoint.Record) int {
	n := 3 + 6*binary.MaxVarintLen64 + 4*binary.MaxVarintLen32 + len(r.Path) + len(r.Path2) + len(r.Consumer)
	for _, name := range r.Names {
		n += binary.MaxVarintLen32 + len(name)
	}
	return n
}

// decodeRecord fills r from a value written by appendRecord. It never
// panics on garbage; every failure wraps ErrDamaged. The strings are
// copied, so v may be reused afterwards.
func decodeRecord(v []byte, r *checkpoint.Record) error {
	if len(v) < 3 {
		return fmt.Errorf("%w: intent record of %d bytes is too short", ErrDamaged, len(v))
	}
	if v[0] < recordVersion || v[0] > recordVersion3 {
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
	r.Parent, r.Parent2, r.Ino2, r.Consumer, r.Names = 0, 0, 0, "", nil
	if v[0] >= recordVersion2 {
		r.Parent = d.uvarint()
		r.Parent2 = d.uvarint()
		r.Ino2 = d.uvarint()
	}
	if v[0] == recordVersion3 {
		r.Consumer = d.str()
		if n := d.uvarint(); n > uint64(len(d.b)) {
			d.err = fmt.Errorf("%d names in %d bytes", n, len(d.b))
		} else if n > 0 {
			r.Names = make([]string, 0, n)
			for range n {
				r.Names = append(r.Names, d.str())
			}
		}
	} else {
		legacyFields(r)
	}
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

// legacyFields moves what versions 1 and 2 encoded in path2 into the
// typed fields: a derived record's consumer ("\x00" + name, after the
// later name of a carried one), and the NUL-separated names of a
// roster's chunk (OpRoster with a path2) or of a census's chunk (OpEntries,
// not derived, with a path2; "\x00" alone for an empty directory).
func legacyFields(r *checkpoint.Record) {
	switch {
	case r.Flags&checkpoint.FlagDerived != 0:
		if i := strings.IndexByte(r.Path2, 0); i >= 0 {
			r.Path2, r.Consumer = r.Path2[:i], r.Path2[i+1:]
		}
	case (r.Op == checkpoint.OpRoster || r.Op == checkpoint.OpEntries) && r.Path2 != "":
		r.Flags |= checkpoint.FlagNames
		if r.Path2 != "\x00" {
			r.Names = strings.Split(r.Path2, "\x00")
		}
		r.Path2 = ""
	}
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

// The encoded State. Version 3, which this hsmfs writes:
//
//	version(1)=3 Current(8) LastQuery(8) LastBlessed(8) Run(8) flags(1)
//	RecoveredAt(8) LastUncleanRun(8)
//	QueryTime(8) BlessTime(8) BlessedBy(str)      the default consumer's
//	NotQueries: count(4), then count × period(8)
//	Consumers:  count(4), then per consumer: Name(str) LastQuery(8)
//	            LastBlessed(8) RecoveredAt(8) cflags(1) Added(8)
//	            QueryTime(8) BlessTime(8) BlessedBy(str) Queries: count(4),
//	            then count × period(8)
//	BlessSeq(8), then per consumer, in the same order, BlessSeq(8)
//
//	str: length(2), then the bytes. flags: 1 Clean, 2 Full (the default
//	consumer's); cflags: 1 Full, 2 Reset.
//
// Version 1, which older hsmfs wrote and this one reads, has no
// QueryTime, BlessTime or BlessedBy (neither for the default consumer nor
// for the named ones), may end after RecoveredAt (stateLenV1: no
// LastUncleanRun), after LastUncleanRun (no NotQueries) or after
// NotQueries (no consumers). Version 2 is version 3 without the BlessSeqs
// (read as 0: not known). An older hsmfs refuses a newer version as
// damaged, so it never forgets who blessed or that a full copy is owed.
const (
	stateV1    = 1
	stateV2    = 2
	stateV3    = 3 // version 2, then BlessSeq and each consumer's
	stateLenV1 = 1 + 8*4 + 1 + 8
	stateLen   = stateLenV1 + 8 // the fixed part up to LastUncleanRun

	stateClean = 1
	stateFull  = 2

	consumerFull  = 1
	consumerReset = 2
)

func encodeState(st checkpoint.State) []byte {
	b := make([]byte, 0, stateLen+64)
	b = append(b, stateV3)
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
	b = binary.BigEndian.AppendUint64(b, uint64(st.QueryTime))
	b = binary.BigEndian.AppendUint64(b, uint64(st.BlessTime))
	b = appendStr16(b, st.BlessedBy)
	b = appendPeriods(b, st.NotQueries)
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.Consumers)))
	for _, c := range st.Consumers {
		b = appendStr16(b, c.Name)
		for _, v := range []uint64{c.LastQuery, c.LastBlessed, c.RecoveredAt} {
			b = binary.BigEndian.AppendUint64(b, v)
		}
		var fl byte
		if c.Full {
			fl |= consumerFull
		}
		if c.Reset {
			fl |= consumerReset
		}
		b = append(b, fl)
		for _, v := range []int64{c.Added, c.QueryTime, c.BlessTime} {
			b = binary.BigEndian.AppendUint64(b, uint64(v))
		}
		b = appendStr16(b, c.BlessedBy)
		b = appendPeriods(b, c.Queries)
	}
	b = binary.BigEndian.AppendUint64(b, st.BlessSeq)
	for _, c := range st.Consumers {
		b = binary.BigEndian.AppendUint64(b, c.BlessSeq)
	}
	return b
}

// appendStr16 appends s with a 16-bit length; longer strings are cut
// (names and "by" are far shorter).
func appendStr16(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendPeriods(b []byte, ps []uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps)))
	for _, p := range ps {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return b
}

// stateReader takes a state apart; the first shortfall sticks in err.
type stateReader struct {
	v   []byte
	err error
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.v) < n {
		r.err = fmt.Errorf("%w: state is truncated", ErrDamaged)
		return nil
	}
	x := r.v[:n]
	r.v = r.v[n:]
	return x
}

func (r *stateReader) u64() uint64 {
	if x := r.take(8); x != nil {
		return binary.BigEndian.Uint64(x)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if x := r.take(4); x != nil {
		return binary.BigEndian.Uint32(x)
	}
	return 0
}

func (r *stateReader) byte1() byte {
	if x := r.take(1); x != nil {
		return x[0]
	}
	return 0
}

func (r *stateReader) str16() string {
	x := r.take(2)
	if x == nil {
		return ""
	}
	return string(r.take(int(binary.BigEndian.Uint16(x))))
}

func (r *stateReader) periods() []uint64 {
	n := int(r.u32())
	if r.err == nil && len(r.v) < 8*n {
		r.err = fmt.Errorf("%w: state list of %d periods in %d bytes", ErrDamaged, n, len(r.v))
		return nil
	}
	var ps []uint64
	for i := 0; i < n && r.err == nil; i++ {
		ps = append(ps, r.u64())
	}
	return ps
}

func decodeState(v []byte) (checkpoint.State, error) {
	var st checkpoint.State
	if len(v) < 1 || v[0] < stateV1 || v[0] > stateV3 {
		return st, fmt.Errorf("%w: state has unknown version (%d bytes)", ErrDamaged, len(v))
	}
	version := v[0]
	if len(v) < stateLenV1 || (version >= stateV2 && len(v) < stateLen) || (len(v) != stateLenV1 && len(v) < stateLen) {
		return st, fmt.Errorf("%w: state of %d bytes, want %d", ErrDamaged, len(v), stateLen)
	}
	r := &stateReader{v: v[1:]}
	st.Current, st.LastQuery, st.LastBlessed, st.Run = r.u64(), r.u64(), r.u64(), r.u64()
	flags := r.byte1()
	if flags&^(stateClean|stateFull) != 0 {
		return st, fmt.Errorf("%w: state has flags byte %d", ErrDamaged, flags)
	}
	st.Clean, st.Full = flags&stateClean != 0, flags&stateFull != 0
	st.RecoveredAt = r.u64()
	if len(r.v) == 0 {
		return st, nil // version 1 before LastUncleanRun
	}
	st.LastUncleanRun = r.u64()
	if version >= stateV2 {
		st.QueryTime, st.BlessTime = int64(r.u64()), int64(r.u64())
		st.BlessedBy = r.str16()
	} else if len(r.v) == 0 {
		return st, nil // version 1 before NotQueries
	}
	st.NotQueries = r.periods()
	if version == stateV1 && r.err == nil && len(r.v) == 0 {
		return st, nil // version 1 without consumers
	}
	n := int(r.u32())
	for i := 0; i < n && r.err == nil; i++ {
		st.Consumers = append(st.Consumers, decodeConsumer(r, version))
	}
	if version >= stateV3 {
		st.BlessSeq = r.u64()
		for i := range st.Consumers {
			st.Consumers[i].BlessSeq = r.u64()
		}
	}
	if r.err == nil && len(r.v) != 0 {
		return st, fmt.Errorf("%w: state has %d bytes after its consumers", ErrDamaged, len(r.v))
	}
	return st, r.err
}

func decodeConsumer(r *stateReader, version byte) checkpoint.Consumer {
	var c checkpoint.Consumer
	c.Name = r.str16()
	c.LastQuery, c.LastBlessed, c.RecoveredAt = r.u64(), r.u64(), r.u64()
	fl := r.byte1()
	if r.err == nil && fl&^(consumerFull|consumerReset) != 0 {
		r.err = fmt.Errorf("%w: consumer %q has flags byte %d", ErrDamaged, c.Name, fl)
	}
	c.Full, c.Reset = fl&consumerFull != 0, fl&consumerReset != 0
	c.Added, c.QueryTime, c.BlessTime = int64(r.u64()), int64(r.u64()), int64(r.u64())
	if version >= stateV2 {
		c.BlessedBy = r.str16()
	}
	c.Queries = r.periods()
	return c
}
