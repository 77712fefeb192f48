package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSlowReaderBlocksNothing: a reader that opens changes and stops
// half-way must not block writers, other queries or a bless, and closing
// the file early ends its query cleanly (the answer is made at open, and
// the query's lock is released before the first read).
func TestSlowReaderBlocksNothing(t *testing.T) {
	m := mount(t)
	for i := 0; i < 3000; i++ { // an answer of a few hundred KiB
		writeFile(t, filepath.Join(m.Mnt, fmt.Sprintf("file-with-a-long-name-%05d", i)), "x")
	}
	waitClosed(t, m.Mnt)
	slow, err := os.Open(filepath.Join(m.Mnt, ".hsm", "changes"))
	must(t, err)
	defer slow.Close()
	buf := make([]byte, 100)
	if _, err := slow.Read(buf); err != nil {
		t.Fatalf("read of the slow reader: %v", err)
	}
	done := make(chan string, 1)
	go func() {
		for i := 0; i < 50; i++ {
			if err := os.WriteFile(filepath.Join(m.Mnt, fmt.Sprintf("while-held-%d", i)), []byte("y"), 0o644); err != nil {
				done <- fmt.Sprintf("a write while a reader holds changes open: %v", err)
				return
			}
		}
		a := query(t, m.Mnt) // another query
		if a.Get("while-held-0") == nil {
			done <- "the second query does not list what was written meanwhile"
			return
		}
		if err := ctl(m.Mnt, fmt.Sprintf("bless %d", a.Query)); err != nil {
			done <- fmt.Sprintf("bless while a reader holds changes open: %v", err)
			return
		}
		done <- ""
	}()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatal(msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("writes, a query and a bless did not finish in 30s while a reader held changes open half-read")
	}
	// The slow reader goes on and gets its whole answer; then closes.
	rest, err := io.ReadAll(slow)
	must(t, err)
	if n := len(buf) + len(rest); n < 3000*len("file-with-a-long-name-00000\n") {
		t.Errorf("the slow reader got %d bytes, less than its answer", n)
	}
	must(t, slow.Close())
	// A reader that closes after a few bytes ends its query cleanly.
	for i := 0; i < 100; i++ {
		writeFile(t, filepath.Join(m.Mnt, fmt.Sprintf("late-%03d", i)), "z")
	}
	waitClosed(t, m.Mnt)
	early, err := os.Open(filepath.Join(m.Mnt, ".hsm", "changes"))
	must(t, err)
	defer early.Close()
	if _, err := early.Read(buf[:10]); err != nil {
		t.Fatal(err)
	}
	must(t, early.Close())
	if st := status(t, m.Mnt); num(t, st, "inflight") != 0 {
		t.Errorf("after the early close: status %v", st)
	}
	bless(t, m.Mnt)
}
