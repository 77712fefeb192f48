package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
	hfs "github.com/hsmfs/hsmfs/fs"
	"github.com/hsmfs/hsmfs/internal/holders"
	"github.com/hsmfs/hsmfs/journal"
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
  --metrics ADDR, -o metrics=ADDR
                     serve Prometheus metrics at http://ADDR/metrics, e.g.
                     127.0.0.1:9101 (port 0: any free port, shown in
                     .hsm/status as "metrics"); off by default
  -h, --help         this help

A dead hsmfs mount at MOUNTPOINT (its daemon was killed: "Transport
endpoint is not connected") is cleared first, and said so on stderr.

It refuses, with a reason on stderr and exit code 1: MOUNTPOINT already
mounted (a live hsmfs, or another filesystem: never touched); BACKING
missing or not a directory; an entry named .hsm at the root of BACKING;
JOURNAL inside BACKING or MOUNTPOINT; a JOURNAL that belongs to another
BACKING, is in use by another mount, or is damaged (it is never reset
silently); a --metrics ADDR that it cannot listen on. An option that FUSE does not know fails the mount (exit 1).
Exit codes: 0 mounted, 1 refused or failed, 2 bad command line (also a
misspelt hsmfs option, such as -o jornal=DIR or -o no-passthrough).
`

// daemonEnv marks the re-executed daemon; readyFd is the pipe on which it
// reports "ok" or the reason it could not mount.
const (
	daemonEnv = "HSMFS_DAEMON_ARGS"
	readyFd   = 3
)

type mountArgs struct {
	Backing    string   `json:"backing"`
	Mountpoint string   `json:"mountpoint"`
	Journal    string   `json:"journal"`
	Options    []string `json:"options"`
	Log        string   `json:"log"`
	Debug      bool     `json:"debug"`
	NoPassthru bool     `json:"no_passthrough"`
	FineOnly   bool     `json:"fine_intents"`
	Strict     bool     `json:"strict"`
	// NoOutsideCheck skips the check at mount for changes made while
	// hsmfs did not run (for users who guarantee there are none).
	NoOutsideCheck bool `json:"no_outside_check"`
	// Lag policy of named consumers (checkpoint.Options).
	ConsumerMaxAge  time.Duration `json:"consumer_max_age"`
	ConsumerWarnAge time.Duration `json:"consumer_warn_age"`
	// stopping tells systemd that the foreground daemon goes down
	// (foreground.go); unset in the background daemon.
	stopping func()
	Metrics  string `json:"metrics"`
}

// inPlace: the mount covers BACKING itself (hsmfs mount DIR DIR).
func (a *mountArgs) inPlace() bool { return a.Backing == a.Mountpoint }

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
	if err := prepareMountpoint(pos[0], pos[1]); err != nil { // mountpoint.go
		return err
	}
	if err := a.resolve(pos[0], pos[1]); err != nil {
		return err
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
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
	return fmt.Errorf("daemon exited before the mount was live; see %s", a.Log)
}

// runDaemon is the re-executed background process.
func runDaemon() int {
	ready := os.NewFile(readyFd, "ready")
	report := func(err error) {
		if err == nil {
			fmt.Fprintln(ready, "ok")
		} else {
			fmt.Fprintln(ready, "error: "+strings.ReplaceAll(err.Error(), "\n", " "))
		}
		ready.Close()
	}
	var a mountArgs
	if err := json.Unmarshal([]byte(os.Getenv(daemonEnv)), &a); err != nil {
		report(fmt.Errorf("bad daemon arguments: %w", err))
		return exitError
	}
	os.Unsetenv(daemonEnv)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	warn := func(msg string) { fmt.Fprintln(ready, "warn: "+strings.ReplaceAll(msg, "\n", " ")) }
	if err := serve(a, log, report, warn); err != nil {
		log.Error("hsmfs stopped", "err", err)
		return exitError
	}
	return exitOK
}

// serve mounts and runs until unmounted or signalled. ready is called
// once: with nil when the mount is live, or with the reason it is not;
// warn, before it, tells the user what they should know (it is logged
// too).
func serve(a mountArgs, log *slog.Logger, ready func(error), warn func(string)) (err error) {
	reported := false
	defer func() {
		if !reported {
			ready(err)
		}
	}()
	// Modes come from the kernel with the caller's umask applied already.
	syscall.Umask(0)

	// Listening comes first: an address that cannot be had refuses the
	// mount before anything is opened.
	met, err := newMetricsWiring(a.Metrics)
	if err != nil {
		return err
	}
	defer met.close(log)
	b, err := hfs.OpenBacking(a.Backing)
	if err != nil {
		return err
	}
	defer b.Close()
	j, tr, err := openTracker(a, b, met, log)
	if err != nil {
		return err
	}
	defer j.Close()
	oc, err := checkOutside(a, b, tr, log)
	if err != nil {
		tr.Close()
		return err
	}
	b.SetAfterSync(oc.sync)
	met.outsideFound(oc.Found)
	srv, err := hfs.Mount(met.fsConfig(fsConfig(a, b, tr, oc, met, log)))
	if err != nil {
		tr.Close()
		return err
	}
	if a.inPlace() {
		if err := checkHolders(a, b.Dev(), log, warn); err != nil {
			return errors.Join(err, unmountNow(srv, tr))
		}
	}
	// Before ready: a scrape that follows the mount finds the server up.
	met.serve(tr, j, log)
	defer profile(log)()
	log.Info("mounted", "backing", a.Backing, "mountpoint", a.Mountpoint, "journal", a.Journal, "pid", os.Getpid())
	reported = true
	ready(nil)

	stop := unmountOnSignal(a, srv, log)
	srv.Wait()
	stop()
	a.notifyStopping() // unmounted from outside (umount): no signal came
	if err := tr.Close(); err != nil {
		return err
	}
	oc.atCleanEnd(b, log)
	log.Info("unmounted cleanly")
	return nil
}

// openTracker opens the journal and the tracker on it (recovering after
// an unclean end).
func openTracker(a mountArgs, b *hfs.Backing, met *metricsWiring, log *slog.Logger) (*journal.Journal, *checkpoint.Tracker, error) {
	if err := os.MkdirAll(filepath.Dir(a.Journal), 0o700); err != nil {
		return nil, nil, fmt.Errorf("journal directory: %w", err)
	}
	j, err := journal.Open(a.Journal, a.Backing, met.journalOptions(journal.Options{Logger: log}))
	if err != nil {
		return nil, nil, err
	}
	tr, err := checkpoint.NewWithOptions(j, b, log, met.trackerOptions(checkpoint.Options{FineOnly: a.FineOnly,
		KeepBlessed:    os.Getenv("HSMFS_DEBUG_KEEP_BLESSED") != "",
		ConsumerMaxAge: a.ConsumerMaxAge, ConsumerWarnAge: a.ConsumerWarnAge}))
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	return j, tr, nil
}

// fsConfig is what the mount needs, status and headers included.
func fsConfig(a mountArgs, b *hfs.Backing, tr *checkpoint.Tracker, oc *outsideCheck, met *metricsWiring, log *slog.Logger) hfs.Config {
	return hfs.Config{
		Backing: b, Tracker: tr, Mountpoint: a.Mountpoint, Options: a.Options,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Debug: a.Debug, Log: log,
		NoPassthrough: a.NoPassthru, NameAdded: oc.nameAdded, NameRemoved: oc.nameRemoved, Header: oc.status,
		Info: func() map[string]any {
			m := map[string]any{"pid": os.Getpid(), "backing": a.Backing, "mountpoint": a.Mountpoint, "journal": a.Journal}
			maps.Copy(m, oc.status())
			if addr := met.addr(); addr != "" {
				m["metrics"] = addr
			}
			return m
		},
	}
}

// profile starts what HSMFS_CPUPROFILE and HSMFS_MEMPROFILE ask for (for
// performance work) and returns what stops it.
func profile(log *slog.Logger) (stop func()) {
	var stops []func()
	if p := os.Getenv("HSMFS_CPUPROFILE"); p != "" {
		// The daemon is profiled until it unmounts.
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("HSMFS_MEMPROFILE"); p != "" {
		// SIGUSR1 writes a heap profile (after a collection) to p,
		// replacing the previous one.
		usr := make(chan os.Signal, 1)
		signal.Notify(usr, syscall.SIGUSR1)
		stops = append(stops, func() { signal.Stop(usr) })
		go func() {
			for range usr {
				if err := writeHeapProfile(p); err != nil {
					log.Warn("heap profile", "err", err)
				}
			}
		}()
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

// unmountOnSignal unmounts on SIGINT and SIGTERM, retrying while the
// mount is busy; the returned func stops listening.
func unmountOnSignal(a mountArgs, srv *hfs.Server, log *slog.Logger) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			log.Info("signal: unmounting", "signal", s.String())
			a.notifyStopping()
			for i := 0; ; i++ {
				err := srv.Unmount()
				if err == nil {
					break
				}
				if i%10 == 0 {
					log.Warn("unmount failed, retrying", "err", err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	return func() { signal.Stop(sigs) }
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// checkHolders looks, once an in-place mount is live, for processes that
// still hold something in the directory underneath: they can write
// around the tracker. It warns, or with --strict refuses.
func checkHolders(a mountArgs, dev uint64, log *slog.Logger, warn func(string)) error {
	hs, err := holders.Find(a.Backing, dev)
	if err != nil {
		log.Warn("in place: could not look for processes holding files beneath BACKING", "err", err)
		return nil
	}
	if len(hs) == 0 {
		return nil
	}
	var names []string
	for _, h := range hs {
		names = append(names, h.String())
	}
	msg := fmt.Sprintf("%d open files, directories or mappings beneath %s are from before the mount and can change it around the tracker: %s",
		len(hs), a.Backing, strings.Join(names, "; "))
	if a.Strict {
		return fmt.Errorf("--strict: %s", msg)
	}
	log.Warn("in place: " + msg)
	warn(msg)
	return nil
}

// unmountNow takes down a mount that must not stay (nothing has used it
// yet but the processes that the refusal names may).
func unmountNow(srv interface {
	Unmount() error
	Wait()
}, tr *checkpoint.Tracker) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = srv.Unmount(); err == nil {
			srv.Wait()
			return tr.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("unmount after the refusal: %w", err)
}
