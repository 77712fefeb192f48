package tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	// bigSize is above minio-go's 16 MiB part size and above 64 MiB, the
	// size at which gofakes3 was seen storing aws-chunked framing.
	bigSize = 70 * mib
)

var (
	dataOnce sync.Once
	data     []byte // bigSize random bytes, shared by every test
)

// testData is the first n bytes of one random buffer, made once: a
// 70 MiB buffer per test would cost more time than the tests.
func testData(t testing.TB, n int) []byte {
	t.Helper()
	dataOnce.Do(func() {
		data = make([]byte, bigSize)
		rand.NewChaCha8([32]byte{'h', 's', 'm'}).Read(data)
	})
	if n > len(data) {
		t.Fatalf("testData(%d): at most %d", n, len(data))
	}
	return data[:n]
}

// plainReader hides everything but Read, as the caller's TeeReader does:
// Put must not depend on ReaderAt, WriterTo or Seek.
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

func reader(b []byte) io.Reader { return plainReader{bytes.NewReader(b)} }

// readAll opens name and returns its content, checking that the size
// Open announced is what could be read.
func readAll(t *testing.T, tr Tier, name string) []byte {
	t.Helper()
	rc, size, err := tr.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if int64(len(b)) != size {
		t.Fatalf("Open(%s) said %d bytes, read %d", name, size, len(b))
	}
	return b
}

func put(t *testing.T, tr Tier, name string, b []byte) {
	t.Helper()
	if err := tr.Put(context.Background(), name, reader(b), int64(len(b))); err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", name, len(b), err)
	}
}

func list(t *testing.T, tr Tier) []string {
	t.Helper()
	var names []string
	if err := tr.List(context.Background(), func(n string) error {
		names = append(names, n)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	slices.Sort(names)
	return names
}

func wantAbsent(t *testing.T, tr Tier, name string) {
	t.Helper()
	rc, _, err := tr.Open(context.Background(), name)
	if err == nil {
		rc.Close()
		t.Fatalf("Open(%s): exists, want ErrNotFound", name)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open(%s): %v, want ErrNotFound", name, err)
	}
}

// runContract is the Tier contract: what internal/hsm relies on, run
// against every backend. open returns a new, empty tier for each subtest.
func runContract(t *testing.T, open func(t *testing.T) Tier) {
	t.Run("RoundTrip", func(t *testing.T) {
		tr := open(t)
		ctx := context.Background()
		buf := make([]byte, mib)
		for _, size := range []int{0, 1, mib, bigSize} {
			b := testData(t, size)
			name := fmt.Sprintf("obj-%d", size)
			start := time.Now()
			if err := tr.Put(ctx, name, reader(b), int64(size)); err != nil {
				t.Fatalf("Put(%d bytes): %v", size, err)
			}
			putTime := time.Since(start)

			start = time.Now()
			rc, got, err := tr.Open(ctx, name)
			if err != nil {
				t.Fatalf("Open(%s): %v", name, err)
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, rc, buf)
			rc.Close()
			openTime := time.Since(start)
			if err != nil {
				t.Fatalf("read %s: %v", name, err)
			}
			if got != int64(size) || n != int64(size) {
				t.Fatalf("%s: Open said %d bytes, read %d, want %d", name, got, n, size)
			}
			if want := sha256.Sum256(b); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("%s: content differs (sha256)", name)
			}
			if size == bigSize {
				t.Logf("%s: %d MiB: Put %v (%.0f MiB/s), Open+read %v (%.0f MiB/s)", tr, size/mib,
					putTime.Round(time.Millisecond), float64(size)/mib/putTime.Seconds(),
					openTime.Round(time.Millisecond), float64(size)/mib/openTime.Seconds())
			}
		}
	})

	t.Run("Replace", func(t *testing.T) {
		tr := open(t)
		old, nw := testData(t, 300*kib), testData(t, 1000)
		put(t, tr, "rep", old)
		put(t, tr, "rep", nw[1:]) // shorter: a replace must truncate
		if got := readAll(t, tr, "rep"); !bytes.Equal(got, nw[1:]) {
			t.Fatalf("after replace: %d bytes, want the %d new ones", len(got), len(nw)-1)
		}
		if got := list(t, tr); !slices.Equal(got, []string{"rep"}) {
			t.Fatalf("List after replace: %q", got)
		}
	})

	t.Run("Remove", func(t *testing.T) {
		tr := open(t)
		ctx := context.Background()
		put(t, tr, "gone", testData(t, 10))
		if err := tr.Remove(ctx, "gone"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		wantAbsent(t, tr, "gone")
		if err := tr.Remove(ctx, "gone"); err != nil {
			t.Fatalf("Remove again: %v", err)
		}
		if err := tr.Remove(ctx, "never-was"); err != nil {
			t.Fatalf("Remove of an absent object: %v", err)
		}
		if got := list(t, tr); len(got) != 0 {
			t.Fatalf("List after Remove: %q", got)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		tr := open(t)
		wantAbsent(t, tr, "absent")
		put(t, tr, "present", nil)
		wantAbsent(t, tr, "presen")
		wantAbsent(t, tr, "present2")
	})

	t.Run("List", func(t *testing.T) {
		tr := open(t)
		if got := list(t, tr); len(got) != 0 {
			t.Fatalf("List of a new tier: %q", got)
		}
		want := []string{"a", "b.c", strings.Repeat("n", 200), "x-y_z"}
		for _, n := range want {
			put(t, tr, n, testData(t, len(n)))
		}
		// A failed Put leaves nothing to list.
		if err := tr.Put(context.Background(), "failed", reader(testData(t, 3)), 4); err == nil {
			t.Fatalf("Put of 3 bytes as 4 succeeded")
		}
		if got := list(t, tr); !slices.Equal(got, want) {
			t.Fatalf("List: %q, want %q", got, want)
		}
		stop := errors.New("stop")
		calls := 0
		err := tr.List(context.Background(), func(string) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("List with fn failing: %v after %d calls, want stop after 1", err, calls)
		}
	})

	t.Run("InvalidNames", func(t *testing.T) {
		tr := open(t)
		ctx := context.Background()
		for _, n := range []string{"", ".hidden", ".tmp-x", ".", "..", "a/b", "../x", "/abs", "a b", "a\x00b",
			"é", "a:b", "a\\b", strings.Repeat("n", 201)} {
			if ValidName(n) {
				t.Errorf("ValidName(%q) = true", n)
			}
			if err := tr.Put(ctx, n, reader(nil), 0); err == nil {
				t.Errorf("Put(%q) succeeded", n)
			}
			if rc, _, err := tr.Open(ctx, n); err == nil || errors.Is(err, ErrNotFound) {
				if rc != nil {
					rc.Close()
				}
				t.Errorf("Open(%q): %v, want an invalid-name error", n, err)
			}
			if err := tr.Remove(ctx, n); err == nil {
				t.Errorf("Remove(%q) succeeded", n)
			}
		}
		if err := tr.Put(ctx, "neg", reader(nil), -1); err == nil {
			t.Errorf("Put with size -1 succeeded")
		}
		if got := list(t, tr); len(got) != 0 {
			t.Fatalf("List after refused Puts: %q", got)
		}
	})

	t.Run("ShortReader", func(t *testing.T) {
		tr := open(t)
		ctx := context.Background()
		boom := errors.New("boom")
		old := testData(t, 100)
		put(t, tr, "keep", old)
		for _, c := range []struct {
			what string
			size int
			r    io.Reader
		}{
			{"empty reader", 10, reader(nil)},
			{"5 of 10 bytes", 10, reader(testData(t, 5))},
			// Above the part size: minio-go's multipart path.
			{"17 of 20 MiB", 20 * mib, reader(testData(t, 17*mib))},
			{"exactly one part of two", 20 * mib, reader(testData(t, 16*mib))},
			{"read error", 1000, io.MultiReader(reader(testData(t, 500)), iotest.ErrReader(boom))},
			{"read error in part 2", 20 * mib, io.MultiReader(reader(testData(t, 17*mib)), iotest.ErrReader(boom))},
		} {
			for _, name := range []string{"short", "keep"} {
				if err := tr.Put(ctx, name, c.r, int64(c.size)); err == nil {
					t.Fatalf("%s: Put(%s) of %d bytes succeeded", c.what, name, c.size)
				} else if name == "short" {
					t.Logf("%s: %v", c.what, err)
				}
				// The reader is spent: the second name sees an empty one,
				// which must fail all the same.
			}
			wantAbsent(t, tr, "short")
			if got := readAll(t, tr, "keep"); !bytes.Equal(got, old) {
				t.Fatalf("%s: a failed Put changed the existing object", c.what)
			}
		}
		if got := list(t, tr); !slices.Equal(got, []string{"keep"}) {
			t.Fatalf("List after failed Puts: %q", got)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		tr := open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := tr.Put(ctx, "c", reader(testData(t, mib)), mib); err == nil {
			t.Fatalf("Put with a cancelled context succeeded")
		}
		wantAbsent(t, tr, "c")
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		tr := open(t)
		const n, size = 8, 300 * kib
		all := testData(t, n*size)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				b := all[i*size : (i+1)*size]
				errs[i] = tr.Put(context.Background(), fmt.Sprintf("c%d", i), reader(b), size)
			})
		}
		wg.Wait()
		var want []string
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Put c%d: %v", i, errs[i])
			}
			if got := readAll(t, tr, fmt.Sprintf("c%d", i)); !bytes.Equal(got, all[i*size:(i+1)*size]) {
				t.Fatalf("c%d: content differs", i)
			}
			want = append(want, fmt.Sprintf("c%d", i))
		}
		if got := list(t, tr); !slices.Equal(got, want) {
			t.Fatalf("List: %q, want %q", got, want)
		}
	})
}
