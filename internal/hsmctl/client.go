package hsmctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The layout of the control directory.
const (
	Dir             = ".hsm"
	ChangesFile     = "changes"
	ChangesJSONFile = "changes.json"
	CtlFile         = "ctl"
	StatusFile      = "status"
	ConsumersDir    = "consumers"
	// DefaultConsumer is how .hsm's own consumer is named in lists.
	DefaultConsumer = "default"
)

// IsDefault reports whether name means the default consumer.
func IsDefault(name string) bool { return name == "" || name == DefaultConsumer }

// ErrBadConsumer is returned for a name that cannot name a consumer's
// directory; the mount says whether a good name is a consumer.
var ErrBadConsumer = errors.New("not a consumer name")

// CheckConsumer accepts "" and "default" and any name that can be a
// directory of .hsm/consumers.
func CheckConsumer(name string) error {
	if IsDefault(name) {
		return nil
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("consumer %q: %w", name, ErrBadConsumer)
	}
	return nil
}

// ErrNotMount: the path has no live .hsm (not an hsmfs mount).
var ErrNotMount = errors.New("not an hsmfs mount")

// DeadMountError: the mount's daemon died; the kernel answers ENOTCONN.
type DeadMountError struct{ Mountpoint string }

func (e *DeadMountError) Error() string {
	return fmt.Sprintf("%s: the hsmfs daemon of this mount has died (transport endpoint is not connected); "+
		"run hsmfs mount again to remount it (its next answer lists what was in flight), or hsmfs umount %s to clear it",
		e.Mountpoint, e.Mountpoint)
}

func (e *DeadMountError) Unwrap() error { return syscall.ENOTCONN }

// CommandError is a command that the mount refused: Reason is what ctl
// said ("last error: ..."), Err the errno of the write.
type CommandError struct {
	Command string
	Reason  string
	Err     error
}

func (e *CommandError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %s (%v)", e.Command, e.Reason, e.Err)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Client speaks to one consumer of one mount.
type Client struct {
	Mountpoint string
	Consumer   string // "" for the default
	dir        string // .hsm, or .hsm/consumers/NAME
}

// Open checks that mnt is a live hsmfs mount and that consumer ("" or
// "default": the mount's own) exists on it.
func Open(mnt, consumer string) (*Client, error) {
	if err := CheckConsumer(consumer); err != nil {
		return nil, err
	}
	if IsDefault(consumer) {
		consumer = ""
	}
	c := &Client{Mountpoint: mnt, Consumer: consumer, dir: filepath.Join(mnt, Dir)}
	if _, err := os.Stat(filepath.Join(c.dir, CtlFile)); err != nil {
		return nil, c.mountErr(err)
	}
	if consumer != "" {
		c.dir = filepath.Join(c.dir, ConsumersDir, consumer)
		if _, err := os.Stat(filepath.Join(c.dir, CtlFile)); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				return nil, fmt.Errorf("no consumer %q on %s (hsmfs consumer add %s %s)", consumer, mnt, mnt, consumer)
			}
			return nil, c.mountErr(err)
		}
	}
	return c, nil
}

// mountErr explains an error of a control file: a dead mount, or no
// hsmfs mount at all.
func (c *Client) mountErr(err error) error {
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return &DeadMountError{Mountpoint: c.Mountpoint}
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s is %w (no %s/%s)", c.Mountpoint, ErrNotMount, Dir, CtlFile)
	}
	return err
}

// wrap explains err of what: a dead mount says so alone (what was being
// done does not matter), anything else is "what: err".
func (c *Client) wrap(what string, err error) error {
	err = c.mountErr(err)
	var dead *DeadMountError
	if errors.As(err, &dead) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Path is a control file of this consumer: changes, changes.json, ctl.
func (c *Client) Path(name string) string { return filepath.Join(c.dir, name) }

// mountPath is a file of .hsm itself (status, the mount's ctl).
func (c *Client) mountPath(name string) string { return filepath.Join(c.Mountpoint, Dir, name) }

// Answer is one query's answer to changes.json, read as it comes: a
// million paths never sit in the reader's memory at once.
type Answer struct {
	Header    Header
	HeaderRaw []byte // the header line, without its newline
	c         io.Closer
	r         *bufio.Reader
	n         int // entries read so far
}

// Query runs one query (opening changes.json is the query) and reads
// its header. Close the answer when done.
func (c *Client) Query() (*Answer, error) {
	f, err := os.Open(c.Path(ChangesJSONFile))
	if err != nil {
		return nil, c.wrap("query", err)
	}
	a, err := ReadAnswer(f)
	if err != nil {
		f.Close()
		return nil, c.mountErr(err)
	}
	a.c = f
	return a, nil
}

// ReadAnswer reads the header of a changes.json answer from r; the
// entries follow with Next.
func ReadAnswer(r io.Reader) (*Answer, error) {
	a := &Answer{r: bufio.NewReaderSize(r, 1<<20)}
	line, err := a.line()
	if err == nil && line == nil {
		err = errors.New("empty answer")
	}
	if err == nil {
		err = json.Unmarshal(line, &a.Header)
	}
	if err == nil && a.Header.Query == 0 {
		err = errors.New("the header has no query id")
	}
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	a.HeaderRaw = line
	return a, nil
}

// QueryPlain runs one query of the plain answer (changes).
func (c *Client) QueryPlain() (io.ReadCloser, error) {
	f, err := os.Open(c.Path(ChangesFile))
	if err != nil {
		return nil, c.wrap("query", err)
	}
	return f, nil
}

// line returns the next line without its newline, nil at the end.
func (a *Answer) line() ([]byte, error) {
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

// Next returns the next entry's line (one JSON object, without its
// newline; valid until the next call), nil after the last one. An answer
// that ends before or after its header's count (the mount died while it
// was read) is an error: its query must not be blessed.
func (a *Answer) Next() ([]byte, error) {
	b, err := a.line()
	if err != nil {
		return nil, fmt.Errorf("query %d: read: %w", a.Header.Query, err)
	}
	if b == nil {
		if a.n != a.Header.Count {
			return nil, fmt.Errorf("query %d: the answer ends after %d of %d paths", a.Header.Query, a.n, a.Header.Count)
		}
		return nil, nil
	}
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("query %d: line %d is not a JSON object: %.80q", a.Header.Query, a.n+2, b)
	}
	a.n++
	if a.n > a.Header.Count {
		return nil, fmt.Errorf("query %d: the answer holds more paths than its count %d", a.Header.Query, a.Header.Count)
	}
	return b, nil
}

// NextEntry is Next, decoded (DecodeEntry): nil after the last entry.
func (a *Answer) NextEntry() (*Entry, error) {
	line, err := a.Next()
	if err != nil || line == nil {
		return nil, err
	}
	e, err := DecodeEntry(line)
	if err != nil {
		return nil, fmt.Errorf("query %d: line %d: %w", a.Header.Query, a.n+1, err)
	}
	return &e, nil
}

// Read reads the rest of the answer's text as it comes (after the
// header line).
func (a *Answer) Read(p []byte) (int, error) { return a.r.Read(p) }

// N is how many entries Next has returned.
func (a *Answer) N() int { return a.n }

// Close ends the reading (an unread rest is dropped).
func (a *Answer) Close() error {
	if a.c == nil {
		return nil
	}
	return a.c.Close()
}

// Do writes one command. Checkpoint and consumer commands go to the
// mount's ctl, bless to this consumer's. It returns once the mount made
// the command durable; a refusal is a *CommandError with ctl's reason.
func (c *Client) Do(cmd Command) error {
	p := c.mountPath(CtlFile)
	if cmd.Verb == VerbBless {
		p = c.Path(CtlFile)
	}
	text := cmd.String()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return c.wrap(text, err)
	}
	_, werr := f.Write([]byte(text + "\n"))
	cerr := f.Close()
	if werr == nil && cerr == nil {
		return nil
	}
	if werr == nil {
		werr = cerr
	}
	var errno syscall.Errno
	if errors.As(werr, &errno) {
		werr = errno
	}
	if errors.Is(werr, syscall.ENOTCONN) {
		return c.wrap(text, werr)
	}
	return &CommandError{Command: text, Reason: lastError(p), Err: werr}
}

// Bless blesses query id (0: the latest). full says that the whole tree
// was copied; by names who blessed ("" for no one).
func (c *Client) Bless(id uint64, full bool, by string) error {
	return c.Do(Command{Verb: VerbBless, ID: id, Full: full, By: by})
}

// lastError reads the reason of the last failed command from ctl.
func lastError(ctl string) string {
	text, err := os.ReadFile(ctl)
	if err != nil {
		return ""
	}
	for _, line := range bytes.Split(text, []byte("\n")) {
		if r, ok := bytes.CutPrefix(line, []byte("last error: ")); ok {
			return string(r)
		}
	}
	return ""
}

// Status reads .hsm/status: the parsed object and its text.
func (c *Client) Status() (*Status, []byte, error) {
	data, err := os.ReadFile(c.mountPath(StatusFile))
	if err != nil {
		return nil, nil, c.wrap("status", err)
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, fmt.Errorf("status: %w", err)
	}
	return &st, data, nil
}
