package sync

import (
	"bufio"
	"fmt"
	"io"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// answer is what a round needs of one query; the paths went to a list.
type answer struct {
	id        uint64 // the query id, to bless
	blessed   uint64 // the consumer's last completed bless when the query ran; 0: never
	blessedBy string // who made that bless
	full      bool   // the consumer is new or was reset, an index was lost, or the paths passed the bound: copy the whole tree
	fullWhy   string // the header's full_why, if it gave one
	paths     int    // paths written to the list
}

// query runs one query and writes the answer's paths to list, each ended
// by a NUL, as rsync --from0 --files-from reads them. Names holding a
// newline are in it too.
//
// A path beneath an ancestor that the answer lists as a file, symlink or
// other non-directory is left out, as the plain answer leaves it out:
// rsync would fail on it ("Not a directory", exit 23) and never let the
// round succeed, and rsync replaces the listed ancestor whole anyway.
// Only what the answer says counts (the type at query time), never an
// lstat made later: a path that was not shadowed when the query ran must
// be copied now, or its change would be blessed away uncopied.
func query(c *hsmctl.Client, list io.Writer) (answer, error) {
	a, err := c.Query()
	if err != nil {
		return answer{}, err
	}
	defer a.Close()
	return writeList(a, list)
}

// writeList reads the entries of a and writes their paths to list (see
// query).
func writeList(a *hsmctl.Answer, list io.Writer) (answer, error) {
	h := a.Header
	ans := answer{id: h.Query, blessed: h.Blessed, blessedBy: h.BlessedBy, full: h.Full, fullWhy: h.FullWhy}
	w := bufio.NewWriter(list)
	nonDirs := map[string]bool{} // listed paths that are not directories
	for {
		line, err := a.Next()
		if err != nil {
			return answer{}, err
		}
		if line == nil {
			break
		}
		e, err := hsmctl.DecodeEntry(line)
		if err != nil {
			return answer{}, fmt.Errorf("query %d: %w", ans.id, err)
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
