package checkpoint

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// The two renderings of an answer, made as they are read: a reader of a
// million-line answer holds the answer's entries and one chunk of text,
// never the whole text (which for JSON is several times the entries).

// Format is how an answer is rendered.
type Format int

const (
	// FormatPlain: the rsync-complete plain answer, one path per line,
	// sorted, unique; names holding a newline are left out (they are
	// only in the JSON answer), and so are paths beneath an ancestor
	// that is not a directory any more (see Entry.shadowed).
	FormatPlain Format = iota
	// FormatJSON: JSON Lines, a header object, then one object per
	// path. A path that is not valid UTF-8 cannot travel in a JSON
	// string unchanged, so it also comes as base64 in path_b64.
	FormatJSON
)

// renderChunk is how many bytes a Renderer renders ahead of its reader.
const renderChunk = 64 << 10

// Renderer renders an answer as it is read. ReadAt serves the reads of
// a file: sequential reads go on from where the last one ended, a read
// from an earlier offset renders again from the start. Not safe for
// concurrent use.
type Renderer struct {
	a      *Answer
	format Format
	header map[string]any
	next   int    // the next entry to render; -1: the header
	chunk  []byte // the last chunk rendered
	buf    []byte // what of chunk is not read yet
	off    int64  // the offset of buf[0] in the whole rendering
	err    error  // every read fails with it
}

// ErrPathsOnly: a paths-only answer (QueryOptions.PathsOnly) has no
// types, inodes or link counts to render as JSON.
var ErrPathsOnly = errors.New("checkpoint: a paths-only answer cannot be rendered as JSON")

// Render returns a Renderer of a in format; header adds fields to the
// JSON header (the answer's own fields win).
func (a *Answer) Render(format Format, header map[string]any) *Renderer {
	r := &Renderer{a: a, format: format, header: header}
	if a.pathsOnly && format == FormatJSON {
		r.err = ErrPathsOnly
	}
	r.rewind()
	return r
}

func (r *Renderer) rewind() {
	r.next, r.buf, r.off = 0, nil, 0
	if r.format == FormatJSON {
		r.next = -1
	}
}

// Read implements io.Reader.
func (r *Renderer) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt for a reader that reads mostly in order.
func (r *Renderer) ReadAt(p []byte, off int64) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if off < r.off {
		r.rewind()
	}
	// Skip what lies before off.
	for off > r.off {
		if len(r.buf) == 0 && !r.fill() {
			return 0, io.EOF
		}
		k := min(int64(len(r.buf)), off-r.off)
		r.buf, r.off = r.buf[k:], r.off+k
	}
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 && !r.fill() {
			break
		}
		k := copy(p[n:], r.buf)
		r.buf, r.off, n = r.buf[k:], r.off+int64(k), n+k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill renders the next chunk into buf (empty); false at the end.
func (r *Renderer) fill() bool {
	b := r.chunk[:0]
	if r.next == -1 {
		b = r.appendHeader(b)
		r.next = 0
	}
	for ; r.next < len(r.a.Entries) && len(b) < renderChunk; r.next++ {
		e := &r.a.Entries[r.next]
		if r.format == FormatJSON {
			b = appendEntryJSON(b, e)
		} else if !e.shadowed && strings.IndexByte(e.Path, '\n') < 0 {
			b = append(append(b, e.Path...), '\n')
		}
	}
	r.chunk, r.buf = b, b
	return len(b) > 0
}

func (r *Renderer) appendHeader(b []byte) []byte {
	a := r.a
	hdr := map[string]any{"query": a.Query, "blessed": a.Blessed, "recovered": a.Recovered, "count": len(a.Entries)}
	if a.Full {
		hdr["full"] = true
	}
	if a.FullWhy != "" {
		hdr["full_why"] = a.FullWhy
	}
	if a.Reset {
		hdr["reset"] = true
	}
	if a.BlessedBy != "" {
		hdr["blessed_by"] = a.BlessedBy
	}
	for k, v := range r.header {
		if _, ok := hdr[k]; !ok {
			hdr[k] = v
		}
	}
	return appendJSONLine(b, hdr)
}

// entryJSON is one line of the JSON answer.
type entryJSON struct {
	Path     string   `json:"path"`
	PathB64  string   `json:"path_b64,omitempty"`
	Type     string   `json:"type"`
	Ops      []string `json:"ops"`
	Period   uint64   `json:"period"`
	Inflight bool     `json:"inflight"`
	Ino      uint64   `json:"ino"`
	Nlink    uint32   `json:"nlink"`
	Inos     []uint64 `json:"inos,omitempty"`
	Shadowed bool     `json:"shadowed,omitempty"`
}

func appendEntryJSON(b []byte, e *Entry) []byte {
	je := entryJSON{Path: e.Path, Type: e.Type, Ops: e.Ops, Period: e.Period, Inflight: e.Inflight,
		Ino: e.Ino, Nlink: e.Nlink, Shadowed: e.shadowed}
	if len(e.Inos) > 1 || (len(e.Inos) == 1 && e.Inos[0] != e.Ino) {
		je.Inos = e.Inos
	}
	if !utf8.ValidString(e.Path) {
		je.PathB64 = base64.StdEncoding.EncodeToString([]byte(e.Path))
	}
	return appendJSONLine(b, je)
}

// appendJSONLine appends v as one line of JSON, without HTML escaping
// (as json.Encoder with SetEscapeHTML(false) writes it).
func appendJSONLine(b []byte, v any) []byte {
	w := appendWriter{b}
	enc := json.NewEncoder(&w)
	enc.SetEscapeHTML(false)
	enc.Encode(v) // nothing here can fail to encode
	return w.b
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// Plain renders the whole plain answer (for tests and small answers;
// a reader of the mount gets it through a Renderer).
func (a *Answer) Plain() []byte {
	b, _ := io.ReadAll(a.Render(FormatPlain, nil))
	return b
}
