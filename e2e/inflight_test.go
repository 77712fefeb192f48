package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenForWrite: a file open for writing is a modification for as long
// as it stays open, so a query while it is open, and a bless of that
// query, never lose what is written through it afterwards.
func TestOpenForWrite(t *testing.T) {
	m := mount(t)
	p := filepath.Join(m.Mnt, "f")
	newFile := func(t *testing.T) {
		writeFile(t, p, "0123456789\n")
		reset(t, m.Mnt)
	}
	mustList := func(t *testing.T, what string) *Answer {
		t.Helper()
		a := query(t, m.Mnt)
		if !slices.Contains(a.Paths(), "f") {
			t.Errorf("%s: query %d does not list f: %q", what, a.Query, a.Paths())
		}
		return a
	}

	t.Run("write-after-bless", func(t *testing.T) {
		newFile(t)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		must(t, err)
		defer f.Close()
		mustList(t, "while f is open for writing")
		if n := num(t, status(t, m.Mnt), "open_for_write"); n != 1 {
			t.Errorf("status says open_for_write %d, want 1", n)
		}
		bless(t, m.Mnt)
		_, err = f.WriteAt([]byte("X"), 0)
		must(t, err)
		must(t, f.Close())
		mustList(t, "after a write through the fd held across the bless")
		if got := readFile(t, filepath.Join(m.Backing, "f")); got != "X123456789\n" {
			t.Errorf("BACKING/f: %q", got)
		}
		bless(t, m.Mnt)
	})

	t.Run("no-write-after-bless", func(t *testing.T) {
		newFile(t)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		must(t, err)
		mustList(t, "while f is open for writing")
		bless(t, m.Mnt)
		must(t, f.Close())
		// Open across the query: it counts as a modification in the
		// period that the query started, which the bless kept.
		mustList(t, "after closing a file that stayed open across a bless")
		bless(t, m.Mnt)
	})

	t.Run("mmap", func(t *testing.T) {
		newFile(t)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		must(t, err)
		defer f.Close()
		mem, err := unix.Mmap(int(f.Fd()), 0, 11, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		must(t, err)
		mustList(t, "while f is mapped")
		bless(t, m.Mnt)
		copy(mem, "MMAP")
		must(t, unix.Msync(mem, unix.MS_SYNC))
		must(t, unix.Munmap(mem))
		must(t, f.Close())
		mustList(t, "after writing through a shared mapping made before the bless")
		if got := readFile(t, filepath.Join(m.Backing, "f")); got != "MMAP456789\n" {
			t.Errorf("BACKING/f after the mmap write: %q", got)
		}
		bless(t, m.Mnt)
	})

	t.Run("writer-while-querying", func(t *testing.T) {
		newFile(t)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		must(t, err)
		var stop atomic.Bool
		var writes atomic.Int64
		var wg sync.WaitGroup
		var werr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := 0; !stop.Load(); i++ {
				buf[0] = byte(i)
				if _, err := f.WriteAt(buf, int64(i%16)*4096); err != nil {
					werr = err
					return
				}
				writes.Add(1)
			}
		}()
		for round := 0; round < 10; round++ {
			mustList(t, "while a writer runs")
			bless(t, m.Mnt)
		}
		stop.Store(true)
		wg.Wait()
		if werr != nil {
			t.Fatalf("writer: %v", werr)
		}
		must(t, f.Close())
		mustList(t, "after the writer stopped and closed")
		t.Logf("%d writes during 10 query+bless rounds", writes.Load())
		bless(t, m.Mnt)
	})

	t.Run("open-write-close-while-querying", func(t *testing.T) {
		newFile(t)
		var stop atomic.Bool
		var started atomic.Int64 // counts open(2) calls begun
		var wg sync.WaitGroup
		var werr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				started.Add(1)
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err == nil {
					_, err = f.WriteAt([]byte{byte(i)}, 0)
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					werr = err
					return
				}
			}
		}()
		type round struct {
			started int64 // opens begun before the query began
			listed  bool
		}
		var rounds []round
		for i := 0; i < 10; i++ {
			g := started.Load()
			a := query(t, m.Mnt)
			rounds = append(rounds, round{g, slices.Contains(a.Paths(), "f")})
			bless(t, m.Mnt)
		}
		stop.Store(true)
		wg.Wait()
		if werr != nil {
			t.Fatalf("writer: %v", werr)
		}
		last := started.Load() // the last modification began as open number last
		// A query that began after the last modification began must
		// list it; so must the next query if none did.
		covered := false
		for _, r := range rounds {
			if r.started >= last && r.listed {
				covered = true
			}
		}
		a := query(t, m.Mnt)
		final := slices.Contains(a.Paths(), "f")
		if !covered && !final {
			t.Errorf("the last write (open #%d) is lost: no query that began after it listed f, nor does the final one (rounds %+v, final %q)",
				last, rounds, a.Paths())
		}
		// An open that began after round 0 read its counter and before
		// the second-to-last round did is recorded in a period that one
		// of the rounds' queries answers: the rounds cannot all miss f.
		listed := 0
		for _, r := range rounds {
			if r.listed {
				listed++
			}
		}
		if listed == 0 && rounds[len(rounds)-2].started > rounds[0].started {
			t.Errorf("f was modified throughout, but no query listed it: %+v", rounds)
		}
		t.Logf("%d opens; rounds %+v; final lists f: %v", last, rounds, final)
		bless(t, m.Mnt)
	})
}
