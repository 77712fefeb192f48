// Package sync keeps a mirror of an hsmfs mount with rsync: each round
// runs a query, copies its answer with the recipe of docs/usage.md, and
// blesses that query only when the copy succeeded. `hsmfs sync` is its
// command line.
package sync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// Options are the command line of hsmfs sync.
type Options struct {
	Mountpoint string
	Dest       string // a directory, or host:path (anything rsync takes as a destination)
	Consumer   string // "" or "default": the mount's own .hsm

	Full   bool          // copy the whole tree in the first round
	DryRun bool          // rsync --dry-run, print what would be copied, never bless
	Every  time.Duration // > 0: a round every Every until ctx ends

	Rsync     string   // the local rsync program (default "rsync")
	Rsh       string   // rsync -e
	RsyncPath string   // rsync --rsync-path
	Extra     []string // more rsync options, for every copy
	Progress  bool     // rsync --info=progress2 (stdout is a terminal)

	Stdout, Stderr io.Writer
}

// Round is what one round did.
type Round struct {
	Query   uint64
	Full    string // why the round copied the whole tree; "" if it did not
	Paths   int64  // the answer's paths given to rsync, or the files a full copy looked at
	Bytes   int64  // rsync's "Total transferred file size"
	Elapsed time.Duration
}

// syncer runs rounds; what it learnt of DEST carries from one to the next.
type syncer struct {
	o         Options
	ctl       *hsmctl.Client
	r         *rsyncer
	src, dest string
	forceFull bool // --full, until a full copy has succeeded
	checkDest bool // look at DEST in the next round: the first, and after a failure
	// by is what this DEST's blesses say: "sync DEST" (by).
	by string
}

// ErrOtherDest: the consumer's last bless was made by hsmfs sync into
// another DEST.
var ErrOtherDest = errors.New("the consumer keeps another DEST")

// Run syncs once, or with Every round after round until ctx ends (the
// command line ends it on SIGINT and SIGTERM). One round: nil if it
// synced and blessed. With Every: nil if the last round synced, or was
// interrupted by ctx's end; otherwise the last round's error.
func Run(ctx context.Context, o Options) error {
	s, err := newSyncer(o)
	if err != nil {
		return err
	}
	if o.Every <= 0 {
		rd, err := s.round(ctx)
		if err != nil {
			return err
		}
		s.report(rd)
		return nil
	}
	return s.loop(ctx)
}

func newSyncer(o Options) (*syncer, error) {
	ctl, err := hsmctl.Open(o.Mountpoint, o.Consumer)
	if err != nil {
		return nil, err
	}
	if !isRemote(o.Dest) {
		st, _, err := ctl.Status()
		if err != nil {
			return nil, err
		}
		if err := checkOverlap(o.Dest, o.Mountpoint, st.Backing); err != nil {
			return nil, err
		}
	}
	r := newRsyncer(RsyncOptions{Prog: o.Rsync, Rsh: o.Rsh, RsyncPath: o.RsyncPath, Progress: o.Progress,
		Stdout: o.Stdout, Stderr: o.Stderr}, o.Extra, o.DryRun)
	return &syncer{o: o, ctl: ctl, r: r, src: withSlash(o.Mountpoint), dest: withSlash(o.Dest),
		forceFull: o.Full, checkDest: true, by: blessedBy(o.Dest)}, nil
}

// loop runs a round every Every until ctx ends. A failed round is
// logged and tried again in the next one: nothing was blessed, so the
// next answer holds everything that the failed one held.
func (s *syncer) loop(ctx context.Context) error {
	for {
		rd, err := s.round(ctx)
		if ctx.Err() != nil {
			// The signal came during the round: it either completed
			// (and blessed) or stopped rsync and blessed nothing. Both
			// leave a mirror that the next run carries on from.
			if err == nil {
				s.report(rd)
			}
			return nil
		}
		if err != nil {
			fmt.Fprintf(s.o.Stderr, "%s hsmfs sync: %v; next round in %v\n", stamp(), err, s.o.Every)
		} else {
			s.report(rd)
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("stopped after a failed round: %w", err)
			}
			return nil
		case <-time.After(s.o.Every):
		}
	}
}

// round runs one query, copies its answer (or the whole tree), and
// blesses the query if the copy succeeded.
func (s *syncer) round(ctx context.Context) (rd Round, err error) {
	defer func() {
		if err != nil {
			s.checkDest = true // DEST may be anything now: look again
		}
	}()
	start := time.Now()
	// rsync reads released files from their tier: a sync restores
	// nothing (no recall storm). Each round, as a remount forgets it.
	s.ctl.NoRecall()
	list, err := os.CreateTemp("", "hsmfs-sync-*.list")
	if err != nil {
		return rd, fmt.Errorf("answer list: %w", err)
	}
	defer os.Remove(list.Name())
	ans, err := query(s.ctl, list)
	if cerr := list.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("answer list: %w", cerr)
	}
	if err != nil {
		return rd, err
	}
	rd.Query, rd.Paths = ans.id, int64(ans.paths)
	fail := func(err error) (Round, error) {
		if s.o.DryRun {
			return rd, fmt.Errorf("query %d: %w", ans.id, err)
		}
		return rd, fmt.Errorf("query %d: %w; nothing blessed", ans.id, err)
	}
	// A signal during the query: stop before touching DEST.
	if ctx.Err() != nil {
		return fail(errors.New("stopped by the signal"))
	}
	if rd.Full, err = s.fullReason(ctx, ans); err != nil {
		return fail(err)
	}

	var st copyStats
	switch {
	case rd.Full != "":
		st, err = s.fullCopy(ctx)
		rd.Paths = st.files
	case ans.paths > 0:
		// The contract's recipe, on the NUL-separated list.
		opts := []string{"-a", "-I", "--from0", "--files-from=" + list.Name(), "--delete-missing-args", "--force"}
		st, err = s.r.copy(ctx, opts, s.src, s.dest)
		if err != nil && !s.o.DryRun && !isRemote(s.o.Dest) {
			s.removeLeftovers(ans.id, list.Name())
		}
	}
	rd.Bytes, rd.Elapsed = st.transferred, time.Since(start)
	if err != nil {
		return fail(err)
	}
	if st.vanished > 0 {
		fmt.Fprintf(s.o.Stderr, "hsmfs sync: query %d: %d listed paths had vanished when rsync got to them "+
			"(exit 24): safe, as docs/usage.md explains\n", ans.id, st.vanished)
	}
	if s.o.DryRun {
		return rd, nil
	}
	// The copy is complete: bless even if the signal came meanwhile.
	if err := s.ctl.Bless(ans.id, rd.Full != "", s.by); err != nil {
		return fail(err)
	}
	s.forceFull, s.checkDest = false, false
	rd.Elapsed = time.Since(start)
	return rd, nil
}

// removeLeftovers removes the temporaries that a failed rsync left in
// DEST (leftovers.go), and says so.
func (s *syncer) removeLeftovers(id uint64, list string) {
	n, err := removeLeftovers(list, s.src, s.dest)
	if err != nil {
		fmt.Fprintf(s.o.Stderr, "hsmfs sync: query %d: looking for rsync's temporary files in DEST: %v\n", id, err)
	}
	if n > 0 {
		fmt.Fprintf(s.o.Stderr, "hsmfs sync: query %d: removed %d temporary file(s) that the failed rsync left in DEST\n", id, n)
	}
}

// fullReason says why this round must copy the whole tree, or "" if the
// answer is enough. The answer lists what changed since the last bless,
// so it completes only a DEST that was a copy at that bless: not one
// that is missing, empty, or half-filled by a full copy that failed; not
// one whose consumer's last bless was made by someone else (hsmfs bless,
// a plain bless in ctl, another program), whose copy DEST never got;
// and not any DEST of a consumer that never blessed (a new journal's
// first answer lists only what changed since the mount). A last bless
// made by hsmfs sync into another DEST is refused instead, unless
// --full: one consumer keeps one mirror, and two DESTs would take turns
// at copying the whole tree.
func (s *syncer) fullReason(ctx context.Context, ans answer) (string, error) {
	other, otherSync := strings.CutPrefix(ans.blessedBy, syncPrefix)
	otherSync = otherSync && ans.blessedBy != s.by && ans.blessed != 0
	switch {
	case s.forceFull:
		return "--full", nil
	case otherSync:
		return "", fmt.Errorf("%w: the consumer's last bless (query %d) was made by hsmfs sync into %s; "+
			"one consumer keeps one mirror: give each DEST its own consumer (hsmfs consumer add MOUNTPOINT NAME, "+
			"then hsmfs sync --consumer NAME), or run with --full to make this DEST the consumer's mirror",
			ErrOtherDest, ans.blessed, other)
	case ans.full && ans.fullWhy != "":
		return "the answer says full: " + ans.fullWhy, nil
	case ans.full:
		return "the answer says full: a new consumer, one reset for lagging, or a mount that could not list what was removed around hsmfs", nil
	case ans.blessed == 0:
		return "no query was ever blessed", nil
	}
	if s.checkDest {
		state, err := s.r.probe(ctx, s.dest)
		if err != nil {
			return "", err
		}
		switch state {
		case destMissing:
			return "DEST does not exist", nil
		case destEmpty:
			return "DEST is empty", nil
		case destIncomplete:
			return "an earlier full copy into DEST did not complete", nil
		}
	}
	if ans.blessedBy != s.by {
		who := "a bless that named no one (an older hsmfs sync, or bless written to ctl)"
		if ans.blessedBy != "" {
			who = ans.blessedBy
		}
		return fmt.Sprintf("the last bless (query %d) was not made by hsmfs sync into this DEST, but by %s", ans.blessed, who), nil
	}
	return "", nil
}

// syncPrefix begins what hsmfs sync's blesses say.
const syncPrefix = "sync "

// blessedBy is what the blesses of a sync into dest say: "sync DEST",
// DEST made absolute with its symlinks resolved where it is local, so
// that one directory is one DEST however it is spelt; a remote DEST is
// host:path with the path cleaned (host:dir and host:dir/ are one). It
// is made to fit "by WHO" (hsmctl.ShortBy), always the same way.
func blessedBy(dest string) string {
	d := dest
	if !isRemote(dest) {
		d = resolve(dest)
	} else if host, p, _ := strings.Cut(dest, ":"); p != "" && !strings.HasPrefix(p, ":") {
		d = host + ":" + path.Clean(p)
	}
	return hsmctl.ShortBy(syncPrefix + d)
}

// fullCopy copies the whole tree into DEST with rsync -a -I --delete.
// DEST is marked while it runs, so that a copy that fails (or is killed)
// leaves a DEST that the next round copies whole again: the answers
// would never list what the failed copy did not reach. -I, as in the
// recipe: a file that DEST already holds with the same size and mtime
// may still differ (a power cut keeps an inode's new size and mtime and
// loses the data written with them; the crash tests saw exactly that),
// and rsync's quick check would skip it for good.
func (s *syncer) fullCopy(ctx context.Context) (copyStats, error) {
	if !s.o.DryRun {
		if err := s.r.placeMarker(ctx, s.dest); err != nil {
			return copyStats{}, err
		}
	}
	st, err := s.r.copy(ctx, []string{"-a", "-I", "--delete", "--exclude=/" + markerName}, s.src, s.dest)
	if err != nil || s.o.DryRun {
		return st, err
	}
	return st, s.r.removeMarker(ctx, s.dest)
}

// report prints the summary line of a round; with --every it begins
// with the time.
func (s *syncer) report(rd Round) {
	w := bufio.NewWriter(s.o.Stdout)
	if s.o.Every > 0 {
		fmt.Fprintf(w, "%s ", stamp())
	}
	fmt.Fprintf(w, "query %d", rd.Query)
	if rd.Full != "" {
		fmt.Fprintf(w, ", full copy (%s)", rd.Full)
	}
	verb, end := "transferred", "blessed"
	if s.o.DryRun {
		verb, end = "would be transferred", "dry run, nothing blessed"
	}
	fmt.Fprintf(w, ": %s, %s %s, %.2fs, %s\n", plural(rd.Paths, "path"), plural(rd.Bytes, "byte"), verb, rd.Elapsed.Seconds(), end)
	w.Flush()
}

// plural is "1 path", "2 paths".
func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// stamp is the time at the head of a line of --every.
func stamp() string { return time.Now().Format(time.RFC3339) }

// isRemote reports whether rsync takes dest as remote: a colon before
// any slash (host:path, host::module), or an rsync:// URL.
func isRemote(dest string) bool {
	i := strings.IndexByte(dest, ':')
	return i >= 0 && !strings.Contains(dest[:i], "/")
}

// withSlash ends a directory with /, so that rsync copies its content
// (MOUNTPOINT/ into DEST/) rather than the directory itself.
func withSlash(p string) string {
	switch {
	case strings.HasSuffix(p, "/"):
		return p
	case strings.HasSuffix(p, ":"):
		return p + "./" // host: is the remote home directory
	}
	return p + "/"
}

// checkOverlap refuses a local DEST inside MOUNTPOINT or BACKING, or
// holding either: the full copy (rsync --delete) would copy the tree into
// itself, or delete everything around the mount.
func checkOverlap(dest, mnt, backing string) error {
	d := resolve(dest)
	for _, o := range []struct{ name, path string }{{"MOUNTPOINT", mnt}, {"BACKING", backing}} {
		if o.path == "" {
			continue
		}
		p := resolve(o.path)
		if within(d, p) || within(p, d) {
			return fmt.Errorf("DEST %s and %s %s overlap: refusing to copy a tree into itself", dest, o.name, o.path)
		}
	}
	return nil
}

// resolve makes p absolute with symlinks resolved, as far as it exists.
func resolve(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	rest := ""
	for dir := abs; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == "/" || dir == "." {
			return abs
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// within reports whether p is dir or beneath it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}
