package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// node is what the tree comparison looks at for one path.
type node struct {
	Type   string // file, dir, symlink, other
	Mode   os.FileMode
	Size   int64
	Sum    string // sha256 of a file's content
	Target string // of a symlink
	Mtime  int64  // ns; files only unless dirTimes
	Xattrs string // user.* xattrs, sorted, of files and dirs (withXattrs only)
}

func (n node) String() string {
	s := fmt.Sprintf("%s %v size=%d", n.Type, n.Mode.Perm(), n.Size)
	if n.Sum != "" {
		s += " sum=" + n.Sum[:12]
	}
	if n.Target != "" {
		s += fmt.Sprintf(" -> %q", n.Target)
	}
	if n.Mtime != 0 {
		s += fmt.Sprintf(" mtime=%d", n.Mtime)
	}
	if n.Xattrs != "" {
		s += " xattrs=" + n.Xattrs
	}
	return s
}

type snapOpts struct {
	dirTimes   bool // record the mtimes of directories too
	withXattrs bool
}

// snapshot walks root (without following symlinks) and describes every
// path beneath it. The root itself is "." (mode only).
func snapshot(t testing.TB, root string, o snapOpts) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{Mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			n.Type, n.Size, n.Mtime = "file", fi.Size(), fi.ModTime().UnixNano()
			n.Sum = fileSum(t, p)
		case fi.IsDir():
			n.Type = "dir"
			if o.dirTimes && rel != "." {
				n.Mtime = fi.ModTime().UnixNano()
			}
		case fi.Mode()&os.ModeSymlink != 0:
			n.Type = "symlink"
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			n.Type = "other"
		}
		if o.withXattrs && (n.Type == "file" || n.Type == "dir") {
			n.Xattrs = userXattrs(p)
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

func fileSum(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("snapshot: read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func userXattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var kv []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, _ := syscall.Getxattr(p, name, v)
		if m < 0 {
			m = 0
		}
		kv = append(kv, name+"="+string(v[:m]))
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// treeDiff describes every path where a and b differ, sorted.
func treeDiff(a, b map[string]node, aName, bName string) []string {
	var out []string
	for p, na := range a {
		nb, ok := b[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%q: only in %s (%v)", p, aName, na))
		case na != nb:
			out = append(out, fmt.Sprintf("%q: %s has %v, %s has %v", p, aName, na, bName, nb))
		}
	}
	for p, nb := range b {
		if _, ok := a[p]; !ok {
			out = append(out, fmt.Sprintf("%q: only in %s (%v)", p, bName, nb))
		}
	}
	sort.Strings(out)
	return out
}

// sameTree fails the test with a diff unless the snapshots are equal.
func sameTree(t testing.TB, what string, a, b map[string]node, aName, bName string) bool {
	t.Helper()
	d := treeDiff(a, b, aName, bName)
	if len(d) == 0 {
		return true
	}
	const max = 60
	total := len(d)
	more := ""
	if len(d) > max {
		more = fmt.Sprintf("\n  ... and %d more", len(d)-max)
		d = d[:max]
	}
	t.Errorf("%s: %s and %s differ in %d paths:\n  %s%s", what, aName, bName, total, strings.Join(d, "\n  "), more)
	return false
}
