package fs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// hsmfs's own consumers must not cause a recall storm: hsmfs sync and
// hsmfs follow copy through the mount with rsync, which opens every
// listed file. They register their process through ctl ("norecall PID");
// an open for reading of a released file by that process or one of its
// descendants then reads the archived content from the tier (a verified
// copy in an unnamed temporary file) and the file stays released.

// noRecall holds the registered processes.
type noRecall struct {
	mu    sync.Mutex     // guards procs
	procs map[int]uint64 // pid → its start time, so that a reused pid is not taken for it
}

// add registers pid.
func (nr *noRecall) add(pid int) error {
	_, start, err := procStat(pid)
	if err != nil {
		return fmt.Errorf("norecall: no process %d", pid)
	}
	nr.mu.Lock()
	defer nr.mu.Unlock()
	if nr.procs == nil {
		nr.procs = map[int]uint64{}
	}
	nr.procs[pid] = start
	return nil
}

// covers reports whether pid is a registered process or descends from
// one. Registered processes that are gone are dropped on the way.
func (nr *noRecall) covers(pid int) bool {
	nr.mu.Lock()
	n := len(nr.procs)
	nr.mu.Unlock()
	if n == 0 {
		return false
	}
	for depth := 0; pid > 1 && depth < 64; depth++ {
		ppid, start, err := procStat(pid)
		if err != nil {
			return false
		}
		nr.mu.Lock()
		want, ok := nr.procs[pid]
		if ok && want != start {
			delete(nr.procs, pid) // gone; pid reused
			ok = false
		}
		nr.mu.Unlock()
		if ok {
			return true
		}
		pid = ppid
	}
	return false
}

// procStat reads a process's parent and start time from /proc.
func procStat(pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold anything, spaces and parentheses too.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err == nil {
		start, err = strconv.ParseUint(f[19], 10, 64)
	}
	return ppid, start, err
}

// openTierCopy: a read-only open of a released file by a registered
// consumer reads from the tier. done says whether it took the open (fd,
// the backing file's, is then closed).
func (n *Node) openTierCopy(ctx context.Context, fd int, flags uint32) (f *File, errno syscall.Errno, done bool) {
	if n.r.hsm == nil || isWrite(flags) || !n.r.hsm.Tracking() {
		return nil, 0, false
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok || !n.r.noRecall.covers(int(caller.Pid)) {
		return nil, 0, false
	}
	tmp, ok, err := n.r.hsm.ReadCopy(ctx, n.hsmTarget(fd))
	if !ok {
		return nil, 0, false
	}
	unix.Close(fd)
	if err != nil {
		n.r.log.Error("hsm: reading a released file from its tier failed", "path", n.Path(nil), "err", err)
		return nil, toErrno(err), true
	}
	f = newFile(tmp, flags, nil, n.r, n.relPath, n)
	f.tierCopy = true
	return f, 0, true
}

var (
	_ = (gofs.FileGetattrer)((*File)(nil))
	_ = (gofs.FileStatxer)((*File)(nil))
)

// Getattr and Statx of a tier copy are the file's, not the temporary
// file's.
func (f *File) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if f.tierCopy && f.opened != nil {
		return f.opened.Getattr(ctx, nil, out)
	}
	return f.LoopbackFile.Getattr(ctx, out)
}

func (f *File) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if f.tierCopy && f.opened != nil {
		return f.opened.Statx(ctx, nil, flags, mask, out)
	}
	return f.LoopbackFile.Statx(ctx, flags, mask, out)
}
