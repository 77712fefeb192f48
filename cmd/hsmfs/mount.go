package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/lifecycle"
	"golang.org/x/sys/unix"
)

const mountUsage = `Usage: hsmfs mount [options] BACKING MOUNTPOINT
       hsmfs BACKING MOUNTPOINT -o OPTIONS

Mounts a tracked view of BACKING at MOUNTPOINT. Returns once the mount is
live; the daemon then runs in the background (logs go to --log). The
second form is how mount(8) runs hsmfs (through mount.fuse3) for the
filesystem type fuse.hsmfs, as in /etc/fstab.
BACKING and MOUNTPOINT may be the same directory: the mount then covers it
(in place), applications keep their paths, and nothing new reaches the
directory underneath; "hsmfs umount DIR" gives it back.

Options (each also as -o NAME or -o NAME=VALUE, for fstab):
  --journal DIR, -o journal=DIR
                     where the change records live (default: under
                     $XDG_STATE_HOME/hsmfs/, or /var/lib/hsmfs/ for root;
                     one journal per BACKING). Best on another device.
                     Must not be inside BACKING or MOUNTPOINT.
  -f, --foreground, -o foreground
                     stay attached, log to stderr; SIGINT and SIGTERM
                     unmount cleanly. Tells systemd READY=1 once the
                     mount is live and STOPPING=1 when it goes down (over
                     $NOTIFY_SOCKET: a unit of Type=notify)
  -o OPTIONS         FUSE options passed on: allow_other,
                     default_permissions, ro, nodev, ... (may be repeated);
                     fstab words (defaults, nofail, noauto, _netdev, user,
                     users, comment=, x-*) are ignored
  --log FILE, -o log=FILE
                     background log file (default: JOURNAL.log)
  --debug, -o debug  log every FUSE request
  --no-passthrough, -o no_passthrough
                     keep file reads and writes in hsmfs instead of handing
                     them to the kernel (slower; for comparison)
  --fine-intents, -o fine_intents
                     sync every intent on its own instead of one directory
                     intent per directory and period (slower; for comparison)
  --no-outside-check, -o no_outside_check
                     do not look for changes made to BACKING while hsmfs
                     was not running (only if nothing ever writes to it
                     around hsmfs); the answers' header says so, and
                     the next mount with the check tells every consumer
                     to copy the whole tree once
  --consumer-warn-age DURATION, -o consumer_warn_age=DURATION
                     mark a named consumer lagging (status, consumer list,
                     the log) once it has not blessed for that long
                     (default 24h; 0: never)
  --consumer-max-age DURATION, -o consumer_max_age=DURATION
                     reset a named consumer that has not blessed for that
                     long: its backlog is dropped so that it cannot fill
                     the journal's disk, and its next answer says reset
                     and full (copy the whole tree). Default 0: never
  --strict, -o strict
                     in place (BACKING = MOUNTPOINT): refuse to mount while
                     another process holds a file, a working directory or
                     a mapping beneath it from before (it could write
                     around the tracker); without it they are named in a
                     warning
  --cache-timeout DURATION, -o cache_timeout=DURATION
                     how long the kernel keeps names, attributes and
                     missing names (default 24h: hsmfs is the only writer
                     of BACKING and tells the kernel what changes behind
                     it). Give 1s if something writes BACKING around a
                     mount that is not in place (those changes are not
                     tracked; they then show within a second)
  --max-nodes N, -o max_nodes=N
                     the node budget: once the kernel holds more than N
                     files and directories of the mount, hsmfs asks it to
                     forget the oldest that are not in use (each costs
                     the daemon about 500 bytes; they are looked up again
                     when used). Default 200000; 0: no budget
  --restore-timeout DURATION, -o restore_timeout=DURATION
                     how long an open of a released file waits for its
                     tier (hsmfs hsm) before it fails with EIO (default 5m)
  --metrics ADDR, -o metrics=ADDR
                     serve Prometheus metrics at http://ADDR/metrics, e.g.
                     127.0.0.1:9101 (port 0: any free port, shown in
                     .hsm/status as "metrics"); off by default
  -h, --help         this help

A dead hsmfs mount at MOUNTPOINT (its daemon was killed: "Transport
endpoint is not connected") is cleared first, and said so on stderr.

It refuses, with a reason on stderr and exit code 1: MOUNTPOINT already
mounted (a live hsmfs, or another filesystem: never touched); BACKING
missing or not a directory; a BACKING that another hsmfs mount tracks,
or that overlaps one it tracks (one tracker per directory: add a
consumer to that mount instead); an entry named .hsm at the root of
BACKING; JOURNAL inside BACKING or MOUNTPOINT; a JOURNAL that belongs to
another BACKING, is in use by another mount, is damaged (it is never
reset silently), or that other users may write (chmod 700 it; hsmfs
keeps its journal 0700, its files 0600); a --metrics ADDR that it cannot
listen on. An option that FUSE does not know fails the mount (exit 1,
with fusermount's words). A MOUNTPOINT that is not empty is mounted
over, with a warning: what it holds is hidden until the unmount.

Exit codes: 0 mounted, 1 refused or failed, 2 bad command line (also a
misspelt hsmfs option, such as -o jornal=DIR or -o no-passthrough).
`

// daemonEnv marks the re-executed daemon; readyFd is the pipe on which it
// reports "ok" or the reason it could not mount.
const (
	daemonEnv = "HSMFS_DAEMON_ARGS"
	readyFd   = 3
)

// mountArgs are the mount's settings: parsed here, handed to the
// re-executed daemon as JSON in daemonEnv.
type mountArgs struct{ lifecycle.Config }

// defaultCacheTimeout is how long the kernel keeps what it looked up: a
// day, as libfuse's passthrough_hp. hsmfs is BACKING's only writer (in
// place nothing else can reach it; otherwise writes around the mount are
// a documented limit), and it invalidates what changes behind the
// kernel's back (docs/design.md, "Kernel caching").
const defaultCacheTimeout = 24 * time.Hour

func runMount(args []string) error {
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	var a mountArgs
	var fg bool
	var opts multiFlag
	fs.StringVar(&a.Journal, "journal", "", "")
	fs.BoolVar(&fg, "f", false, "")
	fs.BoolVar(&fg, "foreground", false, "")
	fs.Var(&opts, "o", "")
	fs.StringVar(&a.Log, "log", "", "")
	fs.BoolVar(&a.Debug, "debug", false, "")
	fs.BoolVar(&a.NoPassthru, "no-passthrough", false, "")
	fs.BoolVar(&a.FineOnly, "fine-intents", false, "")
	fs.BoolVar(&a.Strict, "strict", false, "")
	fs.BoolVar(&a.NoOutsideCheck, "no-outside-check", false, "")
	fs.DurationVar(&a.ConsumerMaxAge, "consumer-max-age", 0, "")
	fs.DurationVar(&a.ConsumerWarnAge, "consumer-warn-age", 24*time.Hour, "")
	fs.StringVar(&a.Metrics, "metrics", "", "")
	fs.DurationVar(&a.CacheTimeout, "cache-timeout", defaultCacheTimeout, "")
	fs.IntVar(&a.MaxNodes, "max-nodes", lifecycle.DefaultMaxNodes, "")
	fs.DurationVar(&a.RestoreTimeout, "restore-timeout", 5*time.Minute, "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("need BACKING and MOUNTPOINT, got %d arguments", len(pos))
	}
	if err := applyOptions(&a, &fg, opts); err != nil { // options.go
		return err
	}
	if a.MaxNodes < 0 {
		return usagef("bad --max-nodes %d (a count, 0 or more)", a.MaxNodes)
	}
	// Descriptors that the caller left open (a shell's 5>&1, exec 7<f)
	// must not live on in the daemon: a pipe would never see its end,
	// and a file beneath an in-place mount would be held around it.
	closeOnExec()
	if err := prepareMountpoint(pos[0], pos[1]); err != nil { // mountpoint.go
		return err
	}
	if err := a.resolve(pos[0], pos[1]); err != nil {
		return err
	}
	if err := checkTrackers(a.Backing); err != nil { // tracked.go
		return err
	}
	if !a.InPlace() {
		warnNotEmpty(a.Mountpoint)
	}
	if fg {
		return runForeground(a)
	}
	return spawnDaemon(a)
}

// resolve makes the paths absolute and checks what can be checked before
// the daemon starts.
func (a *mountArgs) resolve(backing, mnt string) error {
	var err error
	if a.Backing, err = realDir(backing, "BACKING"); err != nil {
		return err
	}
	if a.Mountpoint, err = realDir(mnt, "MOUNTPOINT"); err != nil {
		return err
	}
	if a.Journal == "" {
		a.Journal = defaultJournal(a.Backing)
	}
	j, err := filepath.Abs(a.Journal)
	if err != nil {
		return err
	}
	if parent, err := filepath.EvalSymlinks(filepath.Dir(j)); err == nil {
		j = filepath.Join(parent, filepath.Base(j))
	}
	if rj, err := filepath.EvalSymlinks(j); err == nil {
		j = rj
	}
	a.Journal = j
	for _, d := range []struct{ name, path string }{{"BACKING", a.Backing}, {"MOUNTPOINT", a.Mountpoint}} {
		if within(j, d.path) {
			return fmt.Errorf("journal %s is inside %s %s: records must not live in the tree they track", j, d.name, d.path)
		}
	}
	if a.Log == "" {
		a.Log = j + ".log"
	}
	a.Version = versionString()
	return nil
}

func realDir(p, what string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, errors.Unwrap(err))
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s %s is not a directory", what, p)
	}
	return real, nil
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// closeOnExec marks every descriptor above 2 close-on-exec:
// close_range(2) where the kernel has it (Linux 5.11), else each one that
// /proc/self/fd lists.
func closeOnExec() {
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// warnNotEmpty says, as sshfs and rclone do, that what MOUNTPOINT holds
// is hidden while the mount stands.
func warnNotEmpty(mnt string) {
	f, err := os.Open(mnt)
	if err != nil {
		return
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		fmt.Fprintf(os.Stderr, "hsmfs mount: warning: MOUNTPOINT %s is not empty: what it holds is hidden while hsmfs is mounted there\n", mnt)
	}
}

// defaultJournal is one journal per BACKING under the state directory.
func defaultJournal(backing string) string {
	base := os.Getenv("XDG_STATE_HOME")
	switch {
	case os.Geteuid() == 0:
		base = "/var/lib/hsmfs"
	case base != "":
		base = filepath.Join(base, "hsmfs")
	default:
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "state", "hsmfs")
	}
	sum := sha256.Sum256([]byte(backing))
	return filepath.Join(base, filepath.Base(backing)+"-"+hex.EncodeToString(sum[:6]))
}

// spawnDaemon re-executes hsmfs as the background daemon and waits for
// it to say that the mount is live, as sshfs and gocryptfs do.
func spawnDaemon(a mountArgs) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.Log), 0o700); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	logf, err := os.OpenFile(a.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	a.Spawner = os.Getpid()
	enc, _ := json.Marshal(a)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), daemonEnv+"="+string(enc))
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	pw.Close()
	// Warnings first ("warn: ..."), then "ok" or "error: ...".
	rd := bufio.NewReader(pr)
	line, rerr := rd.ReadString('\n')
	for rerr == nil && strings.HasPrefix(line, "warn: ") {
		fmt.Fprint(os.Stderr, "hsmfs mount: warning: "+strings.TrimPrefix(line, "warn: "))
		line, rerr = rd.ReadString('\n')
	}
	pr.Close()
	line = strings.TrimSpace(line)
	if rerr == nil && line == "ok" {
		cmd.Process.Release()
		return nil
	}
	// The daemon failed: it has exited or is about to.
	cmd.Wait()
	if strings.HasPrefix(line, "error: ") {
		return fmt.Errorf("%s (the daemon's log: %s)", strings.TrimPrefix(line, "error: "), a.Log)
	}
	return fmt.Errorf("daemon exited before the mount was live; see its log %s", a.Log)
}
