package journal

import (
	"encoding/hex"
	"reflect"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// TestLegacyRecords: records as the hsmfs before typed records wrote them
// (the bytes below are appendRecord's output at that commit, f9e0b8b),
// with a derived record's consumer and a chunk's names in path2, read
// back into the typed fields; and the typed records, written as version
// 3, read back the same.
func TestLegacyRecords(t *testing.T) {
	tm := time.Unix(0, 1_700_000_000_000_000_000)
	dir, fine := checkpoint.FlagDir, checkpoint.FlagFine
	derived, carried, names := checkpoint.FlagDerived, checkpoint.FlagCarried, checkpoint.FlagNames
	for _, c := range []struct {
		old  string
		want checkpoint.Record
	}{
		{"01130100028080d0e2c6bfce972f016400", // a roster's header
			checkpoint.Record{Op: checkpoint.OpRoster, Flags: dir, Run: 2, Time: tm, Path: "d"}},
		{"01130100028080d0e2c6bfce972f0164076100622063007a", // a roster's chunk
			checkpoint.Record{Op: checkpoint.OpRoster, Flags: dir | names, Run: 2, Time: tm, Path: "d", Names: []string{"a", "b c", "z"}}},
		{"01120100028080d0e2c6bfce972f016400", // a directory intent
			checkpoint.Record{Op: checkpoint.OpEntries, Flags: dir, Run: 2, Time: tm, Path: "d"}},
		{"01120100028080d0e2c6bfce972f016403780079", // a census's chunk
			checkpoint.Record{Op: checkpoint.OpEntries, Flags: dir | names, Run: 2, Time: tm, Path: "d", Names: []string{"x", "y"}}},
		{"01120100028080d0e2c6bfce972f01650100", // the census of an empty directory
			checkpoint.Record{Op: checkpoint.OpEntries, Flags: dir | names, Run: 2, Time: tm, Path: "e"}},
		{"01120a09028080d0e2c6bfce972f017000", // a derived path, default consumer
			checkpoint.Record{Op: checkpoint.OpEntries, Flags: fine | derived, Ino: 9, Run: 2, Time: tm, Path: "p"}},
		{"01010a09028080d0e2c6bfce972f017007006261636b7570", // a derived path, named consumer
			checkpoint.Record{Op: checkpoint.OpWrite, Flags: fine | derived, Ino: 9, Run: 2, Time: tm, Path: "p", Consumer: "backup"}},
		{"010c1909028080d0e2c6bfce972f036f6c64036e6577", // a carried rename, default consumer
			checkpoint.Record{Op: checkpoint.OpRename, Flags: dir | derived | carried, Ino: 9, Run: 2, Time: tm, Path: "old", Path2: "new"}},
		{"010c1909028080d0e2c6bfce972f036f6c640a6e6577006261636b7570", // a carried rename, named consumer
			checkpoint.Record{Op: checkpoint.OpRename, Flags: dir | derived | carried, Ino: 9, Run: 2, Time: tm, Path: "old", Path2: "new", Consumer: "backup"}},
		{"020c0109028080d0e2c6bfce972f036f6c64036e6577030400", // a rename with its directories
			checkpoint.Record{Op: checkpoint.OpRename, Flags: dir, Ino: 9, Parent: 3, Parent2: 4, Run: 2, Time: tm, Path: "old", Path2: "new"}},
	} {
		old, err := hex.DecodeString(c.old)
		if err != nil {
			t.Fatal(err)
		}
		var r checkpoint.Record
		if err := decodeRecord(old, &r); err != nil || !reflect.DeepEqual(r, c.want) {
			t.Errorf("%s reads as %+v, %v; want %+v", c.old, r, err, c.want)
		}
		b := appendRecord(nil, &c.want)
		typed := c.want.Consumer != "" || c.want.Flags&names != 0
		if typed != (b[0] == recordVersion3) {
			t.Errorf("%+v written as version %d", c.want, b[0])
		}
		if !typed && hex.EncodeToString(b) != c.old {
			t.Errorf("%+v written as %x, not as before (%s)", c.want, b, c.old)
		}
		var back checkpoint.Record
		if err := decodeRecord(b, &back); err != nil || !reflect.DeepEqual(back, c.want) {
			t.Errorf("%+v reads back as %+v, %v", c.want, back, err)
		}
	}
}
