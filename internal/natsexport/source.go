package natsexport

import (
	"bytes"
	"strconv"
)

// The hsmfs side of an exporter is an hsmctl.Client of one consumer of
// one mount; this file builds the messages from its answer's lines.

// message builds the body of one message: the entry's object with the
// exporter's fields put in front. Splicing the bytes keeps every field
// hsmfs writes, today's and future ones, without a parse. index is the
// entry's place in the answer, from 0.
func message(prefix []byte, index int, entry []byte) []byte {
	b := make([]byte, 0, len(prefix)+24+len(entry))
	b = append(b, prefix...)
	b = append(b, `"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	if !bytes.Equal(entry, []byte("{}")) {
		b = append(b, ',')
		b = append(b, entry[1:]...)
	} else {
		b = append(b, '}')
	}
	return b
}
