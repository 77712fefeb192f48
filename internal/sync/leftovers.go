package sync

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// rsync writes a file to DEST as a temporary ".NAME.XXXXXX" beside NAME
// and renames it into place. It removes the temporary when it fails, but
// rsync 3.4 and later abort a --files-from copy (exit 2, "invalid path
// from sender") when the tree changes under it, and the receiver,
// signalled between creating the temporary and registering it for
// removal, can leave it (strace in the crash tests showed it). The
// answer never lists such a name (it is not in the mount), so the mirror
// would keep it for good. After a failed round of a list,
// removeLeftovers removes, in the directories of the listed paths, every
// temporary of a listed name that the mount does not hold.
var rsyncTemp = regexp.MustCompile(`(?s)^\.(.+)\.[A-Za-z0-9]{6}$`)

// removeLeftovers reads the NUL-separated list and removes the rsync
// temporaries of its names from dest (a local directory) that src does
// not hold. It returns how many it removed. It removes nothing unless
// src is still the mount (a bare mountpoint holds nothing, so every name
// would look absent), and only in directories that are real directories
// both in src and in dest, never through a symlink in dest.
func removeLeftovers(list, src, dest string) (int, error) {
	if _, err := os.Lstat(filepath.Join(src, ".hsm")); err != nil {
		return 0, fmt.Errorf("the mount is gone: %w", err)
	}
	f, err := os.Open(list)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names := make(map[string]map[string]bool) // directory -> listed names in it
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<26) // as writeList: paths of any length
	sc.Split(splitNUL)
	for sc.Scan() {
		dir, name := filepath.Split(sc.Text())
		if names[dir] == nil {
			names[dir] = make(map[string]bool)
		}
		names[dir][name] = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	removed := 0
	for dir, listed := range names {
		if !realDir(src, dir) || !realDir(dest, dir) {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dest, dir))
		if err != nil {
			continue // gone meanwhile: nothing of rsync's there
		}
		for _, e := range ents {
			m := rsyncTemp.FindStringSubmatch(e.Name())
			if m == nil || !listed[m[1]] || !e.Type().IsRegular() {
				continue
			}
			rel := filepath.Join(dir, e.Name())
			if _, err := os.Lstat(filepath.Join(src, rel)); !errors.Is(err, fs.ErrNotExist) {
				continue // the mount holds that name: it is data
			}
			if err := os.Remove(filepath.Join(dest, rel)); err == nil {
				removed++
			}
		}
	}
	return removed, nil
}

// realDir reports whether root/dir and each directory between them is a
// directory, not a symlink.
func realDir(root, dir string) bool {
	p := root
	for _, c := range strings.Split(filepath.Clean(dir), string(filepath.Separator)) {
		if c == "." || c == "" {
			continue
		}
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	fi, err := os.Lstat(root)
	return err == nil && fi.IsDir()
}

func splitNUL(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
