package sync

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// rsync writes a file to DEST as a temporary ".NAME.XXXXXX" beside NAME
// and renames it into place. It removes the temporary when it fails,
// but not when it is killed, and the crash tests have seen one left
// after a round that failed while the daemon died. The answer never
// lists such a name (it is not in the mount), so the mirror would keep it
// for good. After a failed round of a list, removeLeftovers removes, in
// the directories of the listed paths, every temporary of a listed name
// that the mount does not hold.
var rsyncTemp = regexp.MustCompile(`^\.(.+)\.[A-Za-z0-9]{6}$`)

// removeLeftovers reads the NUL-separated list and removes the rsync
// temporaries of its names from dest (a local directory) that src does
// not hold. It returns how many it removed.
func removeLeftovers(list, src, dest string) (int, error) {
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
		ents, err := os.ReadDir(filepath.Join(dest, dir))
		if err != nil {
			continue // gone, or not a directory: nothing of rsync's there
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

func splitNUL(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
