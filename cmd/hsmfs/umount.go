package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/holders"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/mountinfo"
	"golang.org/x/sys/unix"
)

const umountUsage = `Usage: hsmfs umount MOUNTPOINT

Unmounts MOUNTPOINT and waits until its daemon has closed the journal
cleanly and taken the index of the tree for the next mount's check: as
long as the daemon works, up to 30 minutes; it gives up after a minute
in which the daemon used no CPU. A dead hsmfs mount (its daemon was
killed: "Transport endpoint is not connected") is cleared (detached),
and said so on stderr. Only an hsmfs mount is ever unmounted.
Exit codes: 0 unmounted or dead mount cleared, 1 failed (busy, not
mounted, not an hsmfs mount, or the daemon did not exit), 2 bad command
line.
`

func runUmount(args []string) error {
	mnt, extra, err := oneMountpoint("umount", args, nil)
	if err != nil {
		return err
	}
	if len(extra) != 0 {
		return usagef("takes one MOUNTPOINT")
	}
	abs, err := mountinfo.Resolve(mnt)
	if err != nil {
		return err
	}
	// A dead mount is cleared here; another program's mount is refused.
	if done, err := umountDead(abs); done || err != nil {
		return err
	}
	pid := 0
	if c, err := hsmctl.Open(abs, ""); err == nil {
		if st, _, err := c.Status(); err == nil {
			pid = st.Pid
		}
	}
	if os.Geteuid() == 0 {
		err = unix.Unmount(abs, 0)
	} else {
		out, cerr := exec.Command("fusermount3", "-u", abs).CombinedOutput()
		if cerr != nil {
			err = fmt.Errorf("%s", bytes.TrimSpace(out))
			if bytes.Contains(out, []byte("busy")) {
				err = fmt.Errorf("%w (%s)", syscall.EBUSY, bytes.TrimSpace(out))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w%s", abs, err, busyHolders(abs, err))
	}
	// Return once the daemon has closed its journal and taken the
	// outside-changes index, so that the next mount finds both.
	if pid > 0 {
		return waitExit(pid, exitIdle, exitMax)
	}
	return nil
}

// busyHolders names, for a busy mount, the processes that hold
// something beneath it (as in-place mounts name them): what to close or
// stop before hsmfs umount can succeed.
func busyHolders(mnt string, err error) string {
	if !errors.Is(err, syscall.EBUSY) {
		return ""
	}
	var st unix.Stat_t
	if unix.Stat(mnt, &st) != nil {
		return ""
	}
	hs, herr := holders.Find(mnt, uint64(st.Dev))
	if herr != nil || len(hs) == 0 {
		return "; close what is open beneath it (lsof " + mnt + ", fuser -vm " + mnt + ")"
	}
	names := make([]string, 0, len(hs))
	for i, h := range hs {
		if i == 10 {
			names = append(names, fmt.Sprintf("and %d more", len(hs)-i))
			break
		}
		names = append(names, h.String())
	}
	return "; in use by: " + strings.Join(names, "; ")
}

// How long hsmfs umount waits for the daemon: while it works (the index
// at unmount replays the log of names on the mount's index, 0.2 s per
// million entries, or walks the tree if it cannot: 1.5 to 2.4 s per
// million, minutes for tens of millions), up to exitMax; exitIdle
// without any CPU time used is a daemon that is stuck.
const (
	exitIdle = 60 * time.Second
	exitMax  = 30 * time.Minute
)

// waitExit returns once process pid has exited, or an error once it has
// used no CPU for idle, or after limit.
func waitExit(pid int, idle, limit time.Duration) error {
	start := time.Now()
	first, ok := procStat(pid)
	if !ok {
		return nil // gone already
	}
	lastCPU, lastWork := first.cpu, start
	for {
		st, ok := procStat(pid)
		// Another start time is another process that got the pid. A
		// zombie leader has exited, but its other threads may still be
		// exiting, and the process keeps its files (the journal's lock)
		// until the last one is gone.
		if !ok || st.start != first.start || (dead(st.state) && !threadsLive(pid)) {
			return nil
		}
		now := time.Now()
		if st.cpu != lastCPU {
			lastCPU, lastWork = st.cpu, now
		}
		if now.Sub(lastWork) > idle || now.Sub(start) > limit {
			return fmt.Errorf("unmounted, but daemon %d has not exited after %s (idle for %s)",
				pid, now.Sub(start).Round(time.Second), now.Sub(lastWork).Round(time.Second))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dead(state string) bool { return state == "Z" || state == "X" }

// threadsLive reports whether any thread of process pid is neither a
// zombie nor dead.
func threadsLive(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		if f := statFields(string(b)); len(f) > 0 && !dead(f[0]) {
			return true
		}
	}
	return false
}

// statFields splits a /proc stat line after the command name (field 2),
// which is in parentheses and may hold anything: field 3 comes first.
func statFields(s string) []string {
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// pstat is what waitExit reads of a process: its state, its user and
// system time in clock ticks, and its start time.
type pstat struct {
	state      string
	cpu, start int64
}

// procStat reads /proc/PID/stat (fields 3, 14, 15 and 22); ok is false if
// the process is gone or the file cannot be read.
func procStat(pid int) (pstat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pstat{}, false
	}
	f := statFields(string(b))
	if len(f) < 20 {
		return pstat{}, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	st, err3 := strconv.ParseInt(f[19], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return pstat{}, false
	}
	return pstat{state: f[0], cpu: u + k, start: st}, true
}
