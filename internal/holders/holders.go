// Package holders finds the processes that hold something beneath a
// directory of one filesystem: an open file, a working or root
// directory, or a mapped file.
//
// An in-place mount (hsmfs mount DIR DIR) covers DIR, so every path
// lookup from then on goes through hsmfs. What a process opened before
// the mount is not covered: it still reaches the directory underneath,
// around the tracker. hsmfs looks for such processes once the mount is
// live (a process that opens something between the look and the mount is
// then seen too, because the look comes after) and names them.
//
// It reads /proc with github.com/prometheus/procfs. A process that exits
// or hides its entries (another user's, without root) while it is read
// is skipped: the look is advice, not a guarantee, and docs/usage.md
// says so.
package holders

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Holder is one thing that a process holds beneath the directory.
type Holder struct {
	PID  int
	Comm string
	What string // "fd N", "cwd", "root" or "mmap"
	Path string
}

func (h Holder) String() string {
	return fmt.Sprintf("pid %d (%s) %s %s", h.PID, h.Comm, h.What, h.Path)
}

// Find lists what every process but the excluded ones holds beneath dir
// (or dir itself) on the filesystem dev.
func Find(dir string, dev uint64, exclude ...int) ([]Holder, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []Holder
	for _, p := range procs {
		if p.PID == os.Getpid() || slices.Contains(exclude, p.PID) {
			continue
		}
		out = append(out, held(p, dir, dev)...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PID != out[j].PID {
			return out[i].PID < out[j].PID
		}
		return out[i].What < out[j].What
	})
	return out, nil
}

// held is what one process holds beneath dir on dev.
func held(p procfs.Proc, dir string, dev uint64) []Holder {
	var out []Holder
	comm, _ := p.Comm()
	add := func(what, path string) { out = append(out, Holder{p.PID, comm, what, path}) }
	procDir := "/proc/" + strconv.Itoa(p.PID)
	for _, l := range []struct{ what, link string }{{"cwd", "cwd"}, {"root", "root"}} {
		if t, err := os.Readlink(filepath.Join(procDir, l.link)); err == nil && beneath(t, dir) && onDev(filepath.Join(procDir, l.link), dev) {
			add(l.what, t)
		}
	}
	fds, _ := p.FileDescriptors()
	for _, fd := range fds {
		link := filepath.Join(procDir, "fd", strconv.FormatUint(uint64(fd), 10))
		if t, err := os.Readlink(link); err == nil && beneath(t, dir) && onDev(link, dev) {
			add("fd "+strconv.FormatUint(uint64(fd), 10), t)
		}
	}
	maps, _ := p.ProcMaps()
	seen := map[string]bool{}
	for _, m := range maps {
		if m.Dev == dev && beneath(m.Pathname, dir) && !seen[m.Pathname] {
			seen[m.Pathname] = true
			add("mmap", m.Pathname)
		}
	}
	return out
}

// beneath reports whether the path p is dir or beneath it.
func beneath(p, dir string) bool {
	p = strings.TrimSuffix(p, " (deleted)")
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// onDev reports whether the file that the /proc link leads to is on dev
// (the directory underneath, not the mount over it).
func onDev(link string, dev uint64) bool {
	var st syscall.Stat_t
	return syscall.Stat(link, &st) == nil && uint64(st.Dev) == dev
}

// FlockHolder is the process that holds a flock on the inode ino of the
// file system dev, as /proc/locks shows it (the lock's pid; 0 if none is
// listed). /proc/locks is readable by every user.
func FlockHolder(dev, ino uint64) int {
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	for _, line := range strings.Split(string(data), "\n") {
		// "1: FLOCK  ADVISORY  WRITE 2331 fd:01:1835027 0 EOF"; a
		// waiter's line has "->" after the number.
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			return pid
		}
	}
	return 0
}
