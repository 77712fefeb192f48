package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRendererReadsInPieces: reading an answer in pieces of any size, in
// order or from earlier offsets again (as a reader of the file may), gives
// the same bytes as reading it whole; the JSON has a header and a line per
// entry, the plain text leaves out shadowed paths and names with a newline.
func TestRendererReadsInPieces(t *testing.T) {
	a := &Answer{Query: 7, Blessed: 5}
	for i := 0; i < 5000; i++ {
		e := Entry{Path: fmt.Sprintf("d%03d/f%05d", i%97, i), Type: "file", Ops: []string{"write"}, Period: 6, Ino: uint64(i)}
		switch i % 500 {
		case 1:
			e.shadowed = true
		case 2:
			e.Path += "\nline"
		case 3:
			e.Path += "\xff"
		}
		a.Entries = append(a.Entries, e)
	}
	for _, format := range []Format{FormatPlain, FormatJSON} {
		whole, err := io.ReadAll(a.Render(format, map[string]any{"outside_check": "clean", "query": 99}))
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, uint64(format)))
		r := a.Render(format, map[string]any{"outside_check": "clean", "query": 99})
		for round := 0; round < 200; round++ {
			off := int64(rng.IntN(len(whole) + 10))
			p := make([]byte, 1+rng.IntN(3*renderChunk))
			n, err := r.ReadAt(p, off)
			want := whole[min(off, int64(len(whole))):]
			want = want[:min(len(want), len(p))]
			if !bytes.Equal(p[:n], want) {
				t.Fatalf("format %d: ReadAt(%d bytes, %d) gave %d bytes that differ from the whole rendering", format, len(p), off, n)
			}
			if (n < len(p)) != (err == io.EOF) {
				t.Fatalf("format %d: ReadAt(%d bytes, %d) = %d, %v", format, len(p), off, n, err)
			}
		}
		if format == FormatPlain {
			lines := strings.Split(strings.TrimSuffix(string(whole), "\n"), "\n")
			if want := 5000 - 10 - 10; len(lines) != want {
				t.Errorf("plain: %d lines, want %d", len(lines), want)
			}
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(whole))
		sc.Buffer(nil, 1<<20)
		var hdr map[string]any
		sc.Scan()
		if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr["query"] != 7.0 || hdr["count"] != 5000.0 || hdr["outside_check"] != "clean" {
			t.Fatalf("JSON header %s: %v", sc.Bytes(), err)
		}
		n, b64 := 0, 0
		for sc.Scan() {
			var e entryJSON
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("JSON line %s: %v", sc.Bytes(), err)
			}
			if e.PathB64 != "" {
				b64++
			}
			n++
		}
		if n != 5000 || b64 != 10 {
			t.Errorf("JSON: %d entries (%d with path_b64), want 5000 (10)", n, b64)
		}
	}
}
