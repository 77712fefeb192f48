package journal

import "encoding/binary"

// The key schema is in doc.go, "Key schema".

const (
	prefixMeta       = 'm'
	prefixIntent     = 'i'
	prefixCompletion = 'c'
	prefixTable      = 'h'

	// recKeyLen is the length of intent and completion keys.
	recKeyLen = 1 + 8 + 8
)

// Metadata names, for metaKey.
const (
	metaFormat  = "format"
	metaBacking = "backing"
	metaState   = "state"
	metaSeq     = "seq"
)

// intentKey is the key of the intent record (period, seq).
func intentKey(period, seq uint64) []byte { return recKey(prefixIntent, period, seq) }

// completionKey is the key of the completion marker of intent (period, seq).
func completionKey(period, seq uint64) []byte { return recKey(prefixCompletion, period, seq) }

// tableKey is the key of the HSM table's row name.
func tableKey(name string) []byte { return append([]byte{prefixTable}, name...) }

// metaKey is the key of the metadata entry name.
func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }

func recKey(prefix byte, period, seq uint64) []byte {
	k := make([]byte, recKeyLen)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], period)
	binary.BigEndian.PutUint64(k[9:], seq)
	return k
}

// parseRecKey returns the period and seq of an intent or completion key.
func parseRecKey(k []byte) (period, seq uint64, ok bool) {
	if len(k) != recKeyLen {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), true
}
