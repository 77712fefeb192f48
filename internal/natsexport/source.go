package natsexport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// source is the hsmfs side of an exporter: the control files of one
// consumer of one mount. It knows nothing of NATS.
type source struct {
	dir string // MOUNTPOINT/.hsm, or MOUNTPOINT/.hsm/consumers/NAME
}

func newSource(mount, consumer string) source {
	if consumer == DefaultConsumer || consumer == "" {
		return source{dir: filepath.Join(mount, ".hsm")}
	}
	return source{dir: filepath.Join(mount, ".hsm", "consumers", consumer)}
}

func (s source) changesPath() string { return filepath.Join(s.dir, "changes.json") }
func (s source) ctlPath() string     { return filepath.Join(s.dir, "ctl") }

// check fails unless the consumer's ctl is there: the mount is an hsmfs
// mount (and not the bare directory under a mount that died), and the
// named consumer exists.
func (s source) check(mount, consumer string) error {
	if _, err := os.Stat(s.ctlPath()); err != nil {
		if consumer != DefaultConsumer {
			if _, merr := os.Stat(filepath.Join(mount, ".hsm", "ctl")); merr == nil {
				return fmt.Errorf("%s has no consumer %q (hsmfs consumer add %s %s): %w", mount, consumer, mount, consumer, err)
			}
		}
		return fmt.Errorf("%s is not an hsmfs mount: %w", mount, err)
	}
	return nil
}

// header is the first line of changes.json.
type header struct {
	Query     uint64 `json:"query"`
	Blessed   uint64 `json:"blessed"`
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
	Full      bool   `json:"full"`  // a new or reset named consumer: copy the whole tree
	Reset     bool   `json:"reset"` // the lag policy dropped the consumer's backlog
}

// answer is one query's answer, read line by line so that a million
// paths never sit in the exporter's memory at once.
type answer struct {
	f   *os.File
	r   *bufio.Reader
	hdr header
	n   int // entries read so far
}

// query runs one query (opening changes.json is the query) and reads its
// header.
func (s source) query() (*answer, error) {
	f, err := os.Open(s.changesPath())
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	a := &answer{f: f, r: bufio.NewReaderSize(f, 1<<20)}
	line, err := a.line()
	if err == nil && line == nil {
		err = errors.New("empty answer")
	}
	if err == nil {
		err = json.Unmarshal(line, &a.hdr)
	}
	if err == nil && a.hdr.Query == 0 {
		err = errors.New("the header has no query id")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("query: %w", err)
	}
	return a, nil
}

// line returns the next line without its newline, nil at the end.
func (a *answer) line() ([]byte, error) {
	b, err := a.r.ReadBytes('\n')
	if err == io.EOF {
		if len(b) != 0 {
			return nil, errors.New("the answer ends without a newline")
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

// next returns the next entry's JSON object, nil after the last one. An
// answer that ends before its header's count (the mount died while it
// was read) is an error: its query must not be blessed.
func (a *answer) next() ([]byte, error) {
	b, err := a.line()
	if err != nil {
		return nil, fmt.Errorf("query %d: read: %w", a.hdr.Query, err)
	}
	if b == nil {
		if a.n != a.hdr.Count {
			return nil, fmt.Errorf("query %d: the answer ends after %d of %d paths", a.hdr.Query, a.n, a.hdr.Count)
		}
		return nil, nil
	}
	// hsmfs writes one object per line; a cheap check, since the full
	// parse would cost as much as the publish (the readers parse it).
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("query %d: line %d is not a JSON object: %.80q", a.hdr.Query, a.n+2, b)
	}
	a.n++
	if a.n > a.hdr.Count {
		return nil, fmt.Errorf("query %d: the answer holds more paths than its count %d", a.hdr.Query, a.hdr.Count)
	}
	return b, nil
}

func (a *answer) close() error { return a.f.Close() }

// bless writes "bless ID" to ctl. hsmfs returns once the bless is
// durable; on failure ctl tells why (e.g. a query answered before a
// crash of the mount cannot be blessed).
func (s source) bless(id uint64) error {
	f, err := os.OpenFile(s.ctlPath(), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("bless %d: %w", id, err)
	}
	_, werr := fmt.Fprintf(f, "bless %d\n", id)
	cerr := f.Close()
	if werr == nil && cerr == nil {
		return nil
	}
	if werr == nil {
		werr = cerr
	}
	if text, err := os.ReadFile(s.ctlPath()); err == nil {
		for _, line := range strings.Split(string(text), "\n") {
			if why, ok := strings.CutPrefix(line, "last error: "); ok {
				return fmt.Errorf("bless %d: %s: %w", id, why, werr)
			}
		}
	}
	return fmt.Errorf("bless %d: %w", id, werr)
}

// message builds the body of one message: the entry's object with the
// exporter's fields put in front. Splicing the bytes keeps every field
// hsmfs writes, today's and future ones, without a parse.
func (a *answer) message(prefix []byte, entry []byte) []byte {
	b := make([]byte, 0, len(prefix)+24+len(entry))
	b = append(b, prefix...)
	b = append(b, `"index":`...)
	b = strconv.AppendInt(b, int64(a.n-1), 10)
	if !bytes.Equal(entry, []byte("{}")) {
		b = append(b, ',')
		b = append(b, entry[1:]...)
	} else {
		b = append(b, '}')
	}
	return b
}
