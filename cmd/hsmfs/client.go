package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/mountinfo"
	"github.com/hsmfs/hsmfs/journal"
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

const changesUsage = `Usage: hsmfs changes [--consumer NAME] [--json | -0] MOUNTPOINT

Runs one query and prints its answer: the paths changed since the last
bless, one per line (rsync --files-from format). The query id is printed
on stderr, and a line "full: ..." when the answer says full: the consumer
is new or was reset, or the mount could not list what was removed around
hsmfs, so copy the whole tree once, then bless. --json prints the JSON
Lines answer (.hsm/changes.json); -0 prints the paths NUL-separated,
names with newlines included.
--consumer NAME queries for the named consumer (.hsm/consumers/NAME/).
Exit codes: 0 answered, 1 failed, 2 bad command line.
`

const blessUsage = `Usage: hsmfs bless [--consumer NAME] [ID] MOUNTPOINT

Tells hsmfs that the answer of query ID (default: the latest query) has
been used safely: BACKING is synced, then the records of every period
before ID are discarded (once every consumer has blessed past them).
Returns once the bless is durable. --consumer NAME blesses for the named
consumer.
Exit codes: 0 blessed, 1 failed (an ID that no query returned), 2 bad command line.
`

const checkpointUsage = `Usage: hsmfs checkpoint MOUNTPOINT

Starts a new period and waits for the modifications of the earlier ones
to complete. Exit codes: 0 done, 1 failed, 2 bad command line.
`

const statusUsage = `Usage: hsmfs status [--json] MOUNTPOINT

Prints the mount's state: pid, backing, journal, current period, last
query, last bless, pending paths, modifications in flight, recovered.
Exit codes: 0 printed, 1 not an hsmfs mount or failed, 2 bad command line.
`

const journalUsage = `Usage: hsmfs journal check JOURNAL
       hsmfs journal dump JOURNAL
       hsmfs journal reset JOURNAL

check: checks a journal that is not mounted: metadata, format, every
record, and prints what it found.
dump: prints every record (period, seq, run, op, flags, completed, paths)
and the state of a journal that is not mounted.
reset: the deliberate way to start over after a damaged journal: moves
JOURNAL aside to JOURNAL.reset-TIMESTAMP (nothing is deleted), so that the
next mount starts a fresh journal. The fresh journal knows nothing of
earlier changes: copy the whole tree to your mirror once afterwards.
Exit codes: 0 sound / moved aside, 1 damaged, in use or failed, 2 bad command line.
`

// ctlPath finds MOUNTPOINT/.hsm/NAME and checks that it is an hsmfs mount.
func ctlPath(mnt, name string) (string, error) { return consumerPath(mnt, "", name) }

// consumerPath finds the control file name of a consumer: .hsm/NAME for
// the default ("" or "default"), .hsm/consumers/CONSUMER/NAME for a
// named one.
func consumerPath(mnt, consumer, name string) (string, error) {
	if _, err := os.Stat(filepath.Join(mnt, ".hsm", "ctl")); err != nil {
		return "", fmt.Errorf("%s is not an hsmfs mount: %w", mnt, err)
	}
	if consumer == "" || consumer == checkpoint.DefaultConsumer {
		return filepath.Join(mnt, ".hsm", name), nil
	}
	dir := filepath.Join(mnt, ".hsm", "consumers", consumer)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("no consumer %q on %s (hsmfs consumer list): %w", consumer, mnt, err)
	}
	return filepath.Join(dir, name), nil
}

func oneMountpoint(name string, args []string, setup func(*flag.FlagSet)) (string, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if setup != nil {
		setup(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(pos) == 0 {
		return "", nil, usagef("need MOUNTPOINT")
	}
	return pos[len(pos)-1], pos[:len(pos)-1], nil
}

func runChanges(args []string) error {
	var asJSON, nul bool
	var consumer string
	mnt, extra, err := oneMountpoint("changes", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "")
		fs.BoolVar(&nul, "0", false, "")
		fs.StringVar(&consumer, "consumer", "", "")
	})
	if err != nil {
		return err
	}
	if len(extra) != 0 || (asJSON && nul) {
		return usagef("takes one MOUNTPOINT and at most one of --json, -0")
	}
	p, err := consumerPath(mnt, consumer, "changes.json")
	if err != nil {
		return err
	}
	// Read as it comes: the daemon renders a big answer chunk by chunk,
	// and neither side holds it whole.
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		if err == io.EOF {
			return fmt.Errorf("query: empty answer")
		}
		return fmt.Errorf("query: %w", err)
	}
	var hdr struct {
		Query uint64 `json:"query"`
		Full  bool   `json:"full"`
	}
	if err := json.Unmarshal(line, &hdr); err != nil {
		return fmt.Errorf("query: bad header: %w", err)
	}
	fmt.Fprintf(os.Stderr, "query %d\n", hdr.Query)
	if hdr.Full {
		// The paths alone cannot make the copy exact (a new or reset
		// consumer, or changes made around hsmfs that could not be
		// listed): say so where a script's user sees it.
		fmt.Fprintf(os.Stderr, "full: this answer cannot update a copy; copy the whole tree once (rsync -a -I --delete --exclude=/.hsm %s/ DEST/, or hsmfs sync), then bless query %d\n", mnt, hdr.Query)
	}
	w := bufio.NewWriter(os.Stdout)
	if asJSON {
		w.Write(line)
		if _, err := io.Copy(w, br); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		return w.Flush()
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var e struct {
			Path     string `json:"path"`
			PathB64  string `json:"path_b64"`
			Shadowed bool   `json:"shadowed"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("query: bad line: %w", err)
		}
		if e.Shadowed {
			continue // as the plain answer: rsync would fail on it
		}
		path := e.Path
		if e.PathB64 != "" {
			raw, err := base64.StdEncoding.DecodeString(e.PathB64)
			if err != nil {
				return fmt.Errorf("query: bad path_b64: %w", err)
			}
			path = string(raw)
		}
		if nul {
			w.WriteString(path)
			w.WriteByte(0)
		} else if !bytes.ContainsRune([]byte(path), '\n') {
			w.WriteString(path)
			w.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return w.Flush()
}

// ctlWrite writes one command to MOUNTPOINT/.hsm/ctl; on failure the
// reason is read back from ctl.
func ctlWrite(mnt, command string) error { return consumerCtlWrite(mnt, "", command) }

// consumerCtlWrite writes one command to a consumer's ctl.
func consumerCtlWrite(mnt, consumer, command string) error {
	p, err := consumerPath(mnt, consumer, "ctl")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(command + "\n"))
	cerr := f.Close()
	if werr == nil {
		return cerr
	}
	if text, err := os.ReadFile(p); err == nil {
		for _, line := range bytes.Split(text, []byte("\n")) {
			if bytes.HasPrefix(line, []byte("last error: ")) {
				return fmt.Errorf("%s: %w", bytes.TrimPrefix(line, []byte("last error: ")), unwrapErrno(werr))
			}
		}
	}
	return werr
}

func unwrapErrno(err error) error {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return err
}

func runBless(args []string) error {
	var consumer string
	mnt, extra, err := oneMountpoint("bless", args, func(fs *flag.FlagSet) { fs.StringVar(&consumer, "consumer", "", "") })
	if err != nil {
		return err
	}
	cmd := "bless"
	switch len(extra) {
	case 0:
	case 1:
		if _, err := strconv.ParseUint(extra[0], 10, 64); err != nil {
			return usagef("ID must be a query id, a number: %q", extra[0])
		}
		cmd += " " + extra[0]
	default:
		return usagef("takes at most ID and MOUNTPOINT")
	}
	return consumerCtlWrite(mnt, consumer, cmd)
}

func runCheckpoint(args []string) error {
	mnt, extra, err := oneMountpoint("checkpoint", args, nil)
	if err != nil {
		return err
	}
	if len(extra) != 0 {
		return usagef("takes one MOUNTPOINT")
	}
	return ctlWrite(mnt, "checkpoint")
}

func readStatus(mnt string) (map[string]any, []byte, error) {
	p, err := ctlPath(mnt, "status")
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, nil, fmt.Errorf("status: %w", err)
	}
	return m, data, nil
}

func runStatus(args []string) error {
	var asJSON bool
	mnt, extra, err := oneMountpoint("status", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
	if err != nil {
		return err
	}
	if len(extra) != 0 {
		return usagef("takes one MOUNTPOINT")
	}
	m, data, err := readStatus(mnt)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := os.Stdout.Write(data)
		return err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		if f, ok := v.(float64); ok {
			v = strconv.FormatFloat(f, 'f', -1, 64)
		}
		fmt.Printf("%-16s %v\n", k+":", v)
	}
	return nil
}

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
	if m, _, err := readStatus(abs); err == nil {
		if f, ok := m["pid"].(float64); ok {
			pid = int(f)
		}
	}
	if os.Geteuid() == 0 {
		err = unix.Unmount(abs, 0)
	} else {
		out, cerr := exec.Command("fusermount3", "-u", abs).CombinedOutput()
		if cerr != nil {
			err = fmt.Errorf("%s", bytes.TrimSpace(out))
		}
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", abs, err)
	}
	// Return once the daemon has closed its journal and taken the
	// outside-changes index, so that the next mount finds both.
	if pid > 0 {
		return waitExit(pid, exitIdle, exitMax)
	}
	return nil
}

// How long hsmfs umount waits for the daemon: while it works (the index
// at unmount walks the tree: 2.4 s per million entries, minutes for tens
// of millions), up to exitMax; exitIdle without any CPU time used is a
// daemon that is stuck.
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

func runJournal(args []string) error {
	fs := flag.NewFlagSet("journal", flag.ContinueOnError)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "check" && pos[0] != "reset" && pos[0] != "dump") {
		return usagef("need check, dump or reset, and JOURNAL")
	}
	if pos[0] == "dump" {
		w := bufio.NewWriter(os.Stdout)
		st, err := journal.Dump(pos[1], func(r *checkpoint.Record, completed bool) {
			fmt.Fprintf(w, "%d\t%d\trun=%d\t%s\tflags=%d\tcompleted=%v\t%q\t%q\n",
				r.Period, r.Seq, r.Run, r.Op, r.Flags, completed, r.Path, r.Path2)
		})
		fmt.Fprintf(w, "state: %+v\n", st)
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		return err
	}
	if pos[0] == "reset" {
		to, err := journal.SetAside(pos[1])
		if err != nil {
			return err
		}
		fmt.Printf("journal %s moved aside to %s; the next mount starts a fresh journal: copy the whole tree once\n", pos[1], to)
		return nil
	}
	rep, err := journal.Check(pos[1])
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Printf("%s\njournal %s is sound\n", out, pos[1])
	return nil
}
