package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The HSM's rows are durable apart from the periods, and a reset carries
// them into the fresh journal.
func TestTableSurvivesReset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j, err := Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatal(err)
	}
	rows := []TableRow{{Name: "t/1", Value: []byte(`{"id":1}`)}, {Name: "f/00000000000000aa", Value: []byte("x")}, {Name: "o/1/gone", Value: []byte{1}}}
	if err := j.PutTable(rows); err != nil {
		t.Fatal(err)
	}
	if err := j.PutTable([]TableRow{{Name: "o/1/gone"}}); err != nil { // a delete
		t.Fatal(err)
	}
	if err := j.DropBefore(1 << 40); err != nil { // a bless drops periods, not rows
		t.Fatal(err)
	}
	j.Close()
	aside, n, err := ResetKeepingTable(dir)
	if err != nil || n != 2 || aside == "" {
		t.Fatalf("ResetKeepingTable: %q, %d rows, %v; want 2", aside, n, err)
	}
	j, err = Open(dir, "/backing", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := map[string]string{}
	if err := j.ScanTable(func(name string, v []byte) error { got[name] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["t/1"] != `{"id":1}` || got["f/00000000000000aa"] != "x" {
		t.Fatalf("table after reset: %v", got)
	}
	if st, _ := j.LoadState(); st.Current != 0 {
		t.Fatalf("the fresh journal has state %+v", st)
	}
}

// A reset cut between setting the old journal aside and renaming the
// fresh one into place: Open names the fresh one instead of starting a
// journal that lacks the table.
func TestInterruptedResetIsNamed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	if err := os.MkdirAll(dir+carrySuffix, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, "/backing", Options{})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "rename it") {
		t.Fatalf("Open with only %s: %v", dir+carrySuffix, err)
	}
}
