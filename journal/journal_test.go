package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
)

// openT opens a journal for backing "/backing" and closes it at the end
// of the test.
func openT(t *testing.T, dir string) *Journal {
	t.Helper()
	j, err := Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func rec(period uint64, path string) *checkpoint.Record {
	return &checkpoint.Record{
		Period: period, Run: 3, Op: checkpoint.OpWrite, Ino: 42,
		Time: time.Unix(1700000000, 123456789), Path: path,
	}
}

type scanned struct {
	r         checkpoint.Record
	completed bool
}

func scanAll(t *testing.T, j *Journal, from uint64) []scanned {
	t.Helper()
	var out []scanned
	err := j.Scan(from, func(r *checkpoint.Record, completed bool) error {
		out = append(out, scanned{*r, completed})
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

func TestRoundTripEveryField(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	in := []*checkpoint.Record{
		{Period: 7, Run: 2, Op: checkpoint.OpRename, Flags: checkpoint.FlagDir, Ino: 1<<63 + 5,
			Time: time.Unix(1712345678, 987654321), Path: "a/b", Path2: "c/d é"},
		{Period: 7, Run: 1<<40 + 1, Op: checkpoint.OpRemovexattr, Path: ""},
		{Period: 8, Op: checkpoint.OpLink, Time: time.Unix(-5, 10), Path: strings.Repeat("x", 4096), Path2: "y"},
	}
	if err := j.Append(in); err != nil {
		t.Fatal(err)
	}
	for i, r := range in {
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d: Seq %d, want %d", i, r.Seq, i+1)
		}
	}
	out := scanAll(t, j, 0)
	if len(out) != len(in) {
		t.Fatalf("scanned %d records, want %d", len(out), len(in))
	}
	for i, s := range out {
		want := *in[i]
		got := s.r
		if !got.Time.Equal(want.Time) {
			t.Errorf("record %d: Time %v, want %v", i, got.Time, want.Time)
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) || s.completed {
			t.Errorf("record %d: got %+v completed=%v, want %+v", i, got, s.completed, want)
		}
	}
	if out[1].r.Time != (time.Time{}) {
		t.Errorf("zero Time came back as %v", out[1].r.Time)
	}
	if got := scanAll(t, j, 8); len(got) != 1 || got[0].r.Period != 8 {
		t.Errorf("Scan(8) = %+v", got)
	}
	if got := scanAll(t, j, 9); len(got) != 0 {
		t.Errorf("Scan(9) = %+v", got)
	}
}

func TestSeqContinuesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	for i := range 5 {
		if err := j.Append([]*checkpoint.Record{rec(1, fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Dropping every record must not let Seq restart.
	if err := j.DropBefore(2); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openT(t, dir)
	r := rec(2, "after")
	if err := j.Append([]*checkpoint.Record{r}); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 6 {
		t.Errorf("Seq after reopen = %d, want 6", r.Seq)
	}
	out := scanAll(t, j, 0)
	if len(out) != 1 || out[0].r.Seq != 6 {
		t.Errorf("scan = %+v", out)
	}
}

func TestCompleteReopen(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	recs := []*checkpoint.Record{rec(1, "a"), rec(1, "b"), rec(2, "c"), rec(2, "d")}
	if err := j.Append(recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[1:] {
		if err := j.Complete(r.Period, r.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Reopen(recs[2].Period, recs[2].Seq); err != nil {
		t.Fatal(err)
	}
	// Reopen of something never completed is harmless.
	if err := j.Reopen(recs[0].Period, recs[0].Seq); err != nil {
		t.Fatal(err)
	}
	want := []bool{false, true, false, true}
	check := func(j *Journal) {
		t.Helper()
		out := scanAll(t, j, 0)
		if len(out) != len(want) {
			t.Fatalf("scanned %d records", len(out))
		}
		for i, s := range out {
			if s.completed != want[i] || s.r.Path != recs[i].Path {
				t.Errorf("record %d (%s): completed=%v, want %v", i, s.r.Path, s.completed, want[i])
			}
		}
	}
	check(j)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	check(openT(t, dir))
}

func TestState(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	st, err := j.LoadState()
	if err != nil || !reflect.DeepEqual(st, checkpoint.State{}) {
		t.Fatalf("new journal: LoadState = %+v, %v", st, err)
	}
	want := checkpoint.State{Current: 9, LastQuery: 1<<64 - 1, LastBlessed: 7, Run: 4, Clean: true, Full: true, RecoveredAt: 8,
		LastUncleanRun: 3, NotQueries: []uint64{8, 9}}
	before := j.Syncs()
	if err := j.SaveState(want); err != nil {
		t.Fatal(err)
	}
	if j.Syncs() == before {
		t.Error("SaveState did not sync")
	}
	if st, err = j.LoadState(); err != nil || !reflect.DeepEqual(st, want) {
		t.Fatalf("LoadState = %+v, %v, want %+v", st, err, want)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openT(t, dir)
	if st, err = j.LoadState(); err != nil || !reflect.DeepEqual(st, want) {
		t.Fatalf("after reopen: LoadState = %+v, %v, want %+v", st, err, want)
	}
}

func TestOtherBacking(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, "/srv/a/../b", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Backing() != "/srv/b" {
		t.Errorf("Backing() = %q", j.Backing())
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, "/srv/c", Options{})
	if !errors.Is(err, ErrOtherBacking) {
		t.Fatalf("Open with another backing: %v, want ErrOtherBacking", err)
	}
	if !strings.Contains(err.Error(), "/srv/b") || !strings.Contains(err.Error(), "/srv/c") {
		t.Errorf("error does not name both paths: %v", err)
	}
	j, err = Open(dir, "/srv/b/", Options{})
	if err != nil {
		t.Fatalf("reopen with the same backing: %v", err)
	}
	j.Close()
}

func TestInUseSameProcess(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	_, err := Open(dir, "/backing", Options{})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), "in use by another mount") {
		t.Errorf("unclear message: %v", err)
	}
	t.Log(err)
	if _, err := Check(dir); !errors.Is(err, ErrInUse) {
		t.Errorf("Check while open: %v, want ErrInUse", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	j2.Close()
}

func TestClose(t *testing.T) {
	j := openT(t, t.TempDir())
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := j.Append([]*checkpoint.Record{rec(1, "x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if err := j.Complete(1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Complete after Close: %v", err)
	}
	if _, err := j.LoadState(); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadState after Close: %v", err)
	}
	if err := j.Scan(0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Scan after Close: %v", err)
	}
}

func TestScanStopsOnError(t *testing.T) {
	j := openT(t, t.TempDir())
	if err := j.Append([]*checkpoint.Record{rec(1, "a"), rec(1, "b")}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	err := j.Scan(0, func(*checkpoint.Record, bool) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("Scan = %v after %d calls, want fn's error after 1", err, n)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	recs := []*checkpoint.Record{rec(1, "a"), rec(1, "b"), rec(3, "c")}
	if err := j.Append(recs); err != nil {
		t.Fatal(err)
	}
	if err := j.Complete(1, recs[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := j.SaveState(checkpoint.State{Current: 3, Run: 1}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if rep.Records != 3 || rep.Periods != 2 || rep.MinPeriod != 1 || rep.MaxPeriod != 3 ||
		rep.Completions != 1 || rep.Orphans != 0 || rep.Damaged != 0 ||
		rep.State.Current != 3 || rep.Backing != "/backing" || rep.Format != formatVersion || rep.NextSeq != 4 {
		t.Errorf("report %+v", rep)
	}
	if _, err := Check(filepath.Join(dir, "missing")); err == nil {
		t.Error("Check of a missing directory succeeded")
	}
}

// TestRecordVersions: a namespace change with its directories' inodes is
// a version 2 record and reads back whole; any other record stays version
// 1, byte for byte what an hsmfs before version 2 wrote, and reads with
// no inodes.
func TestRecordVersions(t *testing.T) {
	tm := time.Unix(0, 1_700_000_000_000_000_000)
	v2 := checkpoint.Record{Op: checkpoint.OpRename, Flags: checkpoint.FlagDir | checkpoint.FlagExchange, Ino: 7,
		Parent: 11, Parent2: 1 << 40, Ino2: 13, Run: 3, Time: tm, Path: "a/b", Path2: "c"}
	b := appendRecord(nil, &v2)
	if b[0] != recordVersion2 {
		t.Fatalf("version %d, want %d", b[0], recordVersion2)
	}
	var r checkpoint.Record
	if err := decodeRecord(b, &r); err != nil || !reflect.DeepEqual(r, v2) {
		t.Errorf("version 2 read back as %+v, %v; want %+v", r, err, v2)
	}
	for i := range len(b) {
		if err := decodeRecord(b[:i], &r); !errors.Is(err, ErrDamaged) {
			t.Errorf("prefix of %d bytes: %v", i, err)
		}
	}
	v1 := checkpoint.Record{Op: checkpoint.OpWrite, Ino: 7, Run: 3, Time: tm, Path: "a/b"}
	b = appendRecord(nil, &v1)
	want := []byte{1, byte(checkpoint.OpWrite), 0, 7, 3}
	if !bytes.HasPrefix(b, want) {
		t.Errorf("version 1 record starts % x, want % x", b[:len(want)], want)
	}
	r = checkpoint.Record{Parent: 5, Parent2: 5, Ino2: 5}
	if err := decodeRecord(b, &r); err != nil || !reflect.DeepEqual(r, v1) {
		t.Errorf("version 1 read back as %+v, %v; want %+v", r, err, v1)
	}
}

func TestRecordDecodeRejectsGarbage(t *testing.T) {
	good := appendRecord(nil, &checkpoint.Record{Op: checkpoint.OpRename, Path: "a", Path2: "bc", Time: time.Now()})
	var r checkpoint.Record
	if err := decodeRecord(good, &r); err != nil {
		t.Fatal(err)
	}
	for i := range len(good) {
		if err := decodeRecord(good[:i], &r); !errors.Is(err, ErrDamaged) {
			t.Errorf("prefix of %d bytes: %v", i, err)
		}
	}
	bad := [][]byte{
		append([]byte{9}, good[1:]...),                                              // version
		append([]byte{1, 0}, good[2:]...),                                           // op 0
		append([]byte{1, 200}, good[2:]...),                                         // op unknown
		append(append([]byte{}, good...), 0),                                        // trailing byte
		{1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // varint overflow
		{1, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},                            // huge length
	}
	for i, b := range bad {
		if err := decodeRecord(b, &r); !errors.Is(err, ErrDamaged) {
			t.Errorf("garbage %d: %v", i, err)
		}
	}
	if _, err := decodeState([]byte{1, 2, 3}); !errors.Is(err, ErrDamaged) {
		t.Errorf("short state: %v", err)
	}
	st := encodeState(checkpoint.State{Current: 1})
	st[33] = 4
	if _, err := decodeState(st); !errors.Is(err, ErrDamaged) {
		t.Errorf("state with an unknown flag: %v", err)
	}
}

// A state written before the Full flag existed (its flags byte was Clean
// alone) reads the same.
func TestStateFlagsOfOlderJournals(t *testing.T) {
	for _, clean := range []byte{0, 1} {
		b := encodeState(checkpoint.State{Current: 2, Run: 1})
		b[33] = clean
		st, err := decodeState(b)
		if err != nil || st.Clean != (clean == 1) || st.Full {
			t.Errorf("Clean byte %d: %+v, %v", clean, st, err)
		}
	}
}

// A process killed while badger rotates its memtable leaves an empty .mem
// file; the journal must still open (the file holds nothing).
func TestOpenAfterKillDuringMemtableRotation(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append([]*checkpoint.Record{{Period: 1, Op: checkpoint.OpWrite, Path: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	j, err = Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatalf("open with an empty memtable file: %v", err)
	}
	defer j.Close()
	n := 0
	if err := j.Scan(0, func(*checkpoint.Record, bool) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("scan: %d records, %v; want 1", n, err)
	}
}

// The named consumers' cursors go through the state and come back; a
// state cut anywhere is damaged.
func TestStateWithConsumers(t *testing.T) {
	st := checkpoint.State{Current: 9, LastQuery: 7, LastBlessed: 5, Run: 3, NotQueries: []uint64{8},
		QueryTime: 300, BlessTime: 250, BlessedBy: "sync host:/mirror", BlessSeq: 1234,
		Consumers: []checkpoint.Consumer{
			{Name: "backup", LastQuery: 8, LastBlessed: 4, Queries: []uint64{6, 8}, RecoveredAt: 2, Full: true, Added: 100, QueryTime: 200, BlessTime: 150, BlessedBy: "export", BlessSeq: 99},
			{Name: "index", LastBlessed: 9, Reset: true, BlessSeq: 7},
		}}
	b := encodeState(st)
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("state came back as\n%+v\nwant\n%+v", got, st)
	}
	// Version 2, as the hsmfs before BlessSeq wrote it: version 3 without
	// the trailing Seqs, which read as 0 (not known).
	v2 := append([]byte{stateV2}, b[1:len(b)-8*(1+len(st.Consumers))]...)
	got, err = decodeState(v2)
	want := st.Clone()
	want.BlessSeq = 0
	for i := range want.Consumers {
		want.Consumers[i].BlessSeq = 0
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("a version 2 state came back as\n%+v, %v\nwant\n%+v", got, err, want)
	}
	for i := 1; i < len(b); i++ {
		if _, err := decodeState(b[:i]); !errors.Is(err, ErrDamaged) {
			t.Errorf("state cut at %d of %d bytes: %v", i, len(b), err)
		}
	}
}

// encodeStateV1 is how hsmfs wrote its state before version 2 (kept here
// to prove that such journals still open).
func encodeStateV1(st checkpoint.State) []byte {
	b := []byte{stateV1}
	for _, v := range []uint64{st.Current, st.LastQuery, st.LastBlessed, st.Run} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
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
	b = appendPeriods(b, st.NotQueries)
	if len(st.Consumers) == 0 {
		return b
	}
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
		b = appendPeriods(b, c.Queries)
	}
	return b
}

// A version 1 state (an older hsmfs's journal) reads as it was written,
// in each of its lengths; who blessed and the default's times read as
// unknown.
func TestStateVersion1(t *testing.T) {
	full := checkpoint.State{Current: 9, LastQuery: 7, LastBlessed: 5, Run: 3, Full: true, RecoveredAt: 4, LastUncleanRun: 2,
		NotQueries: []uint64{8},
		Consumers: []checkpoint.Consumer{
			{Name: "backup", LastQuery: 8, LastBlessed: 4, Queries: []uint64{6, 8}, RecoveredAt: 2, Full: true, Added: 100, QueryTime: 200, BlessTime: 150},
		}}
	noConsumers := full
	noConsumers.Consumers = nil
	noList := noConsumers
	noList.NotQueries = nil
	for _, st := range []checkpoint.State{full, noConsumers, noList} {
		got, err := decodeState(encodeStateV1(st))
		if err != nil || !reflect.DeepEqual(got, st) {
			t.Errorf("version 1 state came back as\n%+v, %v\nwant\n%+v", got, err, st)
		}
	}
	short := encodeStateV1(noList)[:stateLenV1]
	if got, err := decodeState(short); err != nil || got.LastUncleanRun != 0 || got.Current != 9 {
		t.Errorf("version 1 state without LastUncleanRun: %+v, %v", got, err)
	}
}

// A journal directory that others may write is refused, untouched; one
// that they may only read is made 0700, and its files 0600.
func TestOpenMakesPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "j")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	if j, err := Open(dir, "/backing", Options{}); !errors.Is(err, ErrNotPrivate) {
		if err == nil {
			j.Close()
		}
		t.Fatalf("open of a 0777 directory: %v, want ErrNotPrivate", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 1 { // the lock file at most
		t.Errorf("the refused journal directory holds %d entries", len(ents))
	}
	// A journal as an older hsmfs left it under umask 0: files 0666.
	os.Chmod(dir, 0o700)
	j, err := Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.Chmod(filepath.Join(dir, e.Name()), 0o666)
	}
	os.Chmod(dir, 0o755)
	syscall.Umask(0o077) // as the daemon runs
	j, err = Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("journal directory mode %04o, want 0700", fi.Mode().Perm())
	}
	ents, _ = os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s in the journal: mode %04o, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
}

// A lock file planted as a symlink is never followed: its target is not
// written.
func TestLockFileSymlinkRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	if j, err := Open(dir, "/backing", Options{}); err == nil {
		j.Close()
		t.Fatal("a journal whose lock file is a symlink opened")
	}
	if data, _ := os.ReadFile(target); string(data) != "keep me\n" {
		t.Errorf("the symlink's target was written: %q", data)
	}
}
