package sync

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrBadConsumer is returned for a name that cannot be a consumer's.
var ErrBadConsumer = errors.New("not a consumer name")

// CheckConsumer accepts "" and "default" (the mount's own .hsm) and any
// name that can be a directory of .hsm/consumers; the mount says whether
// that consumer exists.
func CheckConsumer(name string) error {
	if name == "" || name == "default" {
		return nil
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("consumer %q: %w", name, ErrBadConsumer)
	}
	return nil
}

// Control is the control directory of one consumer of a mount: its
// changes.json and ctl (status is the mount's, in .hsm). Every
// consumer's directory holds the same files, so a named consumer
// (.hsm/consumers/NAME) needs only another Dir.
type Control struct {
	Mountpoint string
	Dir        string
}

// NewControl finds the control directory of consumer on mnt and checks
// that mnt is an hsmfs mount.
func NewControl(mnt, consumer string) (Control, error) {
	if err := CheckConsumer(consumer); err != nil {
		return Control{}, err
	}
	c := Control{Mountpoint: mnt, Dir: filepath.Join(mnt, ".hsm")}
	if _, err := os.Stat(filepath.Join(c.Dir, "ctl")); err != nil {
		return Control{}, fmt.Errorf("%s is not an hsmfs mount: %w", mnt, err)
	}
	if consumer != "" && consumer != "default" {
		c.Dir = filepath.Join(c.Dir, "consumers", consumer)
		if _, err := os.Stat(filepath.Join(c.Dir, "ctl")); err != nil {
			return Control{}, fmt.Errorf("no consumer %q on %s (hsmfs consumer add %s %s): %w", consumer, mnt, mnt, consumer, err)
		}
	}
	return c, nil
}

// answer is what a round needs of one query; the paths went to a list.
type answer struct {
	id      uint64 // the query id, to bless
	blessed uint64 // the last completed bless when the query ran; 0: never
	full    bool   // the consumer is new or was reset: copy the whole tree
	paths   int    // paths written to the list
}

// query runs one query by reading changes.json (the plain changes file
// does not say the query id) and writes the answer's paths to list,
// each ended by a NUL, as rsync --from0 --files-from reads them. Names
// holding a newline are in it too.
//
// A path beneath an ancestor that the answer lists as a file, symlink or
// other non-directory is left out, as the plain answer leaves it out:
// rsync would fail on it ("Not a directory", exit 23) and never let the
// round succeed, and rsync replaces the listed ancestor whole anyway.
// Only what the answer says counts (the type at query time), never an
// lstat made later: a path that was not shadowed when the query ran must
// be copied now, or its change would be blessed away uncopied.
func (c Control) query(list io.Writer) (answer, error) {
	f, err := os.Open(filepath.Join(c.Dir, "changes.json"))
	if err != nil {
		return answer{}, fmt.Errorf("query: %w", err)
	}
	defer f.Close()
	return writeList(f, list)
}

// entry is the part of a changes.json line that a copy needs.
type entry struct {
	Path    string `json:"path"`
	PathB64 string `json:"path_b64"`
	Type    string `json:"type"`
}

// writeList reads a changes.json answer from r and writes its paths to
// list (see query).
func writeList(r io.Reader, list io.Writer) (answer, error) {
	sc := bufio.NewScanner(r)
	// Paths may be longer than PATH_MAX (hsmfs serves trees of any depth).
	sc.Buffer(make([]byte, 64<<10), 1<<26)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return answer{}, fmt.Errorf("query: %w", err)
		}
		return answer{}, errors.New("query: empty answer")
	}
	var hdr struct {
		Query   *uint64 `json:"query"`
		Blessed uint64  `json:"blessed"`
		Count   int     `json:"count"`
		Full    bool    `json:"full"`
	}
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr.Query == nil {
		return answer{}, fmt.Errorf("query: bad header %q: %v", sc.Bytes(), err)
	}
	ans := answer{id: *hdr.Query, blessed: hdr.Blessed, full: hdr.Full}
	w := bufio.NewWriter(list)
	nonDirs := map[string]bool{} // listed paths that are not directories
	count := 0
	for sc.Scan() {
		count++
		var e entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return answer{}, fmt.Errorf("query %d: bad line %q: %w", ans.id, sc.Bytes(), err)
		}
		if e.PathB64 != "" {
			raw, err := base64.StdEncoding.DecodeString(e.PathB64)
			if err != nil {
				return answer{}, fmt.Errorf("query %d: bad path_b64 %q: %w", ans.id, e.PathB64, err)
			}
			e.Path = string(raw)
		}
		switch e.Type {
		case "file", "symlink", "other":
			nonDirs[e.Path] = true
		}
		// Lines are sorted bytewise, so an ancestor (a prefix) came first.
		if len(nonDirs) > 0 && beneathOneOf(e.Path, nonDirs) {
			continue
		}
		if e.Path == "" {
			e.Path = "." // the root itself, as rsync names it
		}
		w.WriteString(e.Path)
		w.WriteByte(0)
		ans.paths++
	}
	if err := sc.Err(); err != nil {
		return answer{}, fmt.Errorf("query %d: %w", ans.id, err)
	}
	// A short answer would be copied and blessed as if it were whole.
	if count != hdr.Count {
		return answer{}, fmt.Errorf("query %d: the header says %d paths, the answer holds %d", ans.id, hdr.Count, count)
	}
	if err := w.Flush(); err != nil {
		return answer{}, fmt.Errorf("query %d: write the list: %w", ans.id, err)
	}
	return ans, nil
}

// beneathOneOf reports whether a proper ancestor of p is in set.
func beneathOneOf(p string, set map[string]bool) bool {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' && set[p[:i]] {
			return true
		}
	}
	return false
}

// bless blesses query id. "bless ID", not a plain "bless": someone else
// may have run a query since ours, and a plain bless would bless theirs,
// whose answer we never copied.
func (c Control) bless(id uint64) error {
	p := filepath.Join(c.Dir, "ctl")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("bless %d: %w", id, err)
	}
	_, werr := f.Write([]byte("bless " + strconv.FormatUint(id, 10) + "\n"))
	cerr := f.Close()
	if werr != nil {
		// The write fails with a bare errno; ctl keeps the reason.
		if reason := lastError(p); reason != "" {
			return fmt.Errorf("bless %d: %s: %w", id, reason, werr)
		}
		return fmt.Errorf("bless %d: %w", id, werr)
	}
	if cerr != nil {
		return fmt.Errorf("bless %d: %w", id, cerr)
	}
	return nil
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

// backing reads BACKING from status.
func (c Control) backing() (string, error) {
	data, err := os.ReadFile(filepath.Join(c.Mountpoint, ".hsm", "status")) // the mount's, for every consumer
	if err != nil {
		return "", fmt.Errorf("status: %w", err)
	}
	var st struct {
		Backing string `json:"backing"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return "", fmt.Errorf("status: %w", err)
	}
	return st.Backing, nil
}
