package lifecycle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"

	"github.com/hsmfs/hsmfs/checkpoint"
	hfs "github.com/hsmfs/hsmfs/fs"
	"github.com/hsmfs/hsmfs/internal/holders"
	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/journal"
)

// DefaultMaxNodes is the node budget that a mount gets unless told
// (fs.DefaultMaxNodes).
const DefaultMaxNodes = hfs.DefaultMaxNodes

// Serve mounts and runs until unmounted or signalled. ready is called
// once: with nil when the mount is live, or with the reason it is not;
// warn, before it, tells the user what they should know (it is logged
// too).
func Serve(a Config, log *slog.Logger, ready func(error), warn func(string)) (err error) {
	reported := false
	defer func() {
		if !reported {
			ready(err)
		}
	}()
	// What the daemon makes for itself (the journal, its index) is its
	// user's alone; what it makes in BACKING gets the mode the caller
	// asked for back (fs.restoreMode).
	syscall.Umask(hfs.DaemonUmask)

	// Listening comes first: an address that cannot be had refuses the
	// mount before anything is opened.
	met, err := newMetricsWiring(a.Metrics, a.Version)
	if err != nil {
		return err
	}
	defer met.close(log)
	b, err := backing.Open(a.Backing)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := lockBacking(b, func(msg string) { log.Warn(msg); warn(msg) }); err != nil {
		return err
	}
	j, tr, err := openTracker(a, b, met, log)
	if err != nil {
		return err
	}
	defer j.Close()
	hm, err := openHSM(a, b, j, log)
	if err != nil {
		tr.Close()
		return err
	}
	defer hm.Close() // before the journal closes: restores in flight commit
	oc, err := checkOutside(a, b, tr, log)
	if err != nil {
		tr.Close()
		return err
	}
	b.SetAfterSync(oc.sync)
	met.outsideFound(oc.Found)
	if a.InPlace() && !a.Strict && a.CacheTimeout > time.Second && heldBeneath(a, b.Dev()) {
		// What those holders change around the mount would hide behind
		// the kernel's long cache; with one second it shows, as it
		// would through a loopback (it is still not tracked).
		log.Warn("in place: processes hold something beneath BACKING from before the mount: the kernel keeps names and attributes for one second only", "cache_timeout", a.CacheTimeout)
		a.CacheTimeout = time.Second
	}
	logStart := logSize(a)
	srv, err := hfs.Mount(met.fsConfig(fsConfig(a, b, j, tr, hm, oc, met, log)))
	if err != nil {
		tr.Close()
		return withFusermount(err, a, logStart)
	}
	if a.InPlace() {
		if err := checkHolders(a, b.Dev(), log, warn); err != nil {
			return errors.Join(err, unmountNow(srv, tr))
		}
	}
	// Before ready: a scrape that follows the mount finds the server up.
	met.serve(tr, j, hm, srv, log)
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
func openTracker(a Config, b *backing.Tree, met *metricsWiring, log *slog.Logger) (*journal.Journal, *checkpoint.Tracker, error) {
	if err := os.MkdirAll(filepath.Dir(a.Journal), 0o700); err != nil {
		return nil, nil, fmt.Errorf("journal directory: %w", err)
	}
	// The log, the tree index and its log of names live beside the
	// journal: as private as it (journal/private.go).
	for _, suffix := range journal.Companions {
		if fixed, err := journal.PrivateFile(a.Journal + suffix); err != nil {
			return nil, nil, err
		} else if fixed {
			log.Warn("made private (0600): an older hsmfs left it open to others", "file", a.Journal+suffix)
		}
	}
	j, err := journal.Open(a.Journal, a.Backing, met.journalOptions(journal.Options{Logger: log}))
	if err != nil {
		return nil, nil, err
	}
	tr, err := checkpoint.NewWithOptions(j, b, log, met.trackerOptions(checkpoint.Options{FineOnly: a.FineOnly,
		KeepBlessed:    os.Getenv("HSMFS_DEBUG_KEEP_BLESSED") != "",
		SlowQuery:      debugDuration("HSMFS_DEBUG_SLOW_QUERY", log),
		ConsumerMaxAge: a.ConsumerMaxAge, ConsumerWarnAge: a.ConsumerWarnAge}))
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	return j, tr, nil
}

// debugDuration reads a duration from a debugging variable (0 if unset
// or bad, which is logged).
func debugDuration(name string, log *slog.Logger) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		log.Warn("ignored: not a duration", "variable", name, "value", v)
		return 0
	}
	log.Warn("debugging setting in force", "variable", name, "value", d)
	return d
}

// fsConfig is what the mount needs, status and headers included.
func fsConfig(a Config, b *backing.Tree, j *journal.Journal, tr *checkpoint.Tracker, hm *hsm.Manager, oc *outsideCheck, met *metricsWiring, log *slog.Logger) hfs.Config {
	return hfs.Config{
		Backing: b, Tracker: tr, HSM: hm, Mountpoint: a.Mountpoint, Options: a.Options,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Debug: a.Debug, Log: log, CacheTimeout: a.CacheTimeout, MaxNodes: a.MaxNodes,
		NoPassthrough: a.NoPassthru, NameAdded: oc.nameAdded, NameRemoved: oc.nameRemoved, Header: oc.status,
		Info: func(st *hsmctl.Status) {
			st.Pid, st.Backing, st.Mountpoint, st.Journal = os.Getpid(), a.Backing, a.Mountpoint, a.Journal
			st.OutsideCheck, st.OutsideFound = oc.Result, oc.Found
			st.Metrics = met.addr()
			st.JournalFree, st.JournalReserve, st.JournalLow = j.Space()
			st.OldNameFallbacks = tr.OldNameFallbacks()
			st.WholeAnswers = tr.WholeAnswers()
			st.OldNamesCapped = tr.OldNamesCapped()
		},
	}
}

// logSize is where the daemon's log file ends now (0 in the foreground,
// whose log is stderr).
func logSize(a Config) int64 {
	if a.Foreground {
		return 0
	}
	fi, err := os.Stat(a.Log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// withFusermount adds what fusermount said to a failed mount. go-fuse
// falls back to fusermount when the direct mount fails, hands it the
// daemon's stderr (the log file) and reports only its wait status
// ("fusermount exited with code 256"): fusermount's own words
// ("fusermount3: unknown option 'bogusopt'") are in the log, from start
// on.
func withFusermount(err error, a Config, start int64) error {
	if a.Foreground {
		return err // fusermount wrote to the terminal
	}
	f, ferr := os.Open(a.Log)
	if ferr != nil {
		return err
	}
	defer f.Close()
	var said []string
	sc := bufio.NewScanner(io.NewSectionReader(f, start, 1<<20))
	for sc.Scan() {
		// fusermount writes "/usr/bin/fusermount3: unknown option ...";
		// the daemon's own lines begin "time=".
		if line := sc.Text(); strings.Contains(line, "fusermount") && !strings.HasPrefix(line, "time=") {
			said = append(said, strings.TrimSpace(line))
		}
	}
	if len(said) == 0 {
		return errors.New(strings.TrimSpace(err.Error()))
	}
	return fmt.Errorf("mount %s: %s", a.Mountpoint, strings.Join(said, "; "))
}

// unmountOnSignal unmounts on SIGINT and SIGTERM, retrying while the
// mount is busy; the returned func stops listening.
func unmountOnSignal(a Config, srv *hfs.Server, log *slog.Logger) (stop func()) {
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

// heldBeneath reports whether a process holds something beneath BACKING
// (looked at before the mount; checkHolders looks again after it).
func heldBeneath(a Config, dev uint64) bool {
	hs, err := holders.Find(a.Backing, dev, a.Spawner)
	return err == nil && len(hs) > 0
}

// checkHolders looks, once an in-place mount is live, for processes that
// still hold something in the directory underneath: they can write
// around the tracker. It warns, or with --strict refuses.
func checkHolders(a Config, dev uint64, log *slog.Logger, warn func(string)) error {
	hs, err := holders.Find(a.Backing, dev, a.Spawner)
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
