package sync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rsyncer runs rsync towards DEST with what the command line gave.
type rsyncer struct {
	prog      string   // the local rsync program
	rsh       string   // -e: the remote shell
	rsyncPath string   // --rsync-path: rsync on the remote host
	extra     []string // after --: added to every copy
	progress  bool     // --info=progress2 (stdout is a terminal)
	dryRun    bool
	stdout    io.Writer
	stderr    io.Writer
	// ticker, when set (stdout is not a terminal), gets rsync's progress
	// and prints a line of it now and then (progress.go).
	ticker *progressTicker
}

// stopGrace is how long rsync has to clean up after SIGTERM (remove its
// temporary file) before it is killed.
const stopGrace = 10 * time.Second

// transport is the options that reach DEST: every rsync run needs them.
func (r *rsyncer) transport() []string {
	var args []string
	if r.rsh != "" {
		args = append(args, "--rsh="+r.rsh)
	}
	if r.rsyncPath != "" {
		args = append(args, "--rsync-path="+r.rsyncPath)
	}
	return args
}

// copyStats is what the summary line reports of a copy.
type copyStats struct {
	files       int64 // "Number of files": what rsync looked at
	transferred int64 // "Total transferred file size", bytes
	vanished    int   // "file has vanished" lines (exit 24)
}

// copy runs one copy: opts (the recipe's or the full copy's) from src to
// dest. Exit 0 and 24 succeed. On ctx's end rsync gets SIGTERM, so that
// it removes its temporary file, and the copy fails.
func (r *rsyncer) copy(ctx context.Context, opts []string, src, dest string) (copyStats, error) {
	args := append([]string{}, opts...)
	args = append(args, "--info=stats2")
	if (r.progress || r.ticker != nil) && !r.dryRun {
		args = append(args, "--info=progress2")
	}
	if r.dryRun {
		// --itemize-changes: the dry run prints what it would copy or delete.
		args = append(args, "--dry-run", "--itemize-changes")
	}
	args = append(args, r.transport()...)
	args = append(args, r.extra...)
	args = append(args, src, dest)

	cmd := exec.CommandContext(ctx, r.prog, args...)
	var st copyStats
	out, errs := outFilter(r.stdout, &st), errFilter(r.stderr, &st)
	if r.ticker != nil && !r.dryRun {
		r.ticker.begin()
		out.progress = r.ticker.line
	}
	cmd.Stdout, cmd.Stderr = out, errs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	err := cmd.Run()
	out.flush()
	errs.flush()
	code, err := exitCode(cmd, err)
	switch {
	case err != nil:
		return st, fmt.Errorf("%s: %w", r.prog, err)
	case code == 0 || code == 24:
		return st, nil
	case ctx.Err() != nil:
		return st, fmt.Errorf("%s stopped by the signal (exit %d)", r.prog, code)
	default:
		return st, fmt.Errorf("%s exited %d (%s)", r.prog, code, rsyncExitMeaning(code))
	}
}

// exitCode turns what Wait returned into rsync's exit code, or an error
// when rsync did not run or did not exit by itself.
func exitCode(cmd *exec.Cmd, err error) (int, error) {
	ps := cmd.ProcessState
	if ps == nil {
		return 0, err // never started
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 0, fmt.Errorf("killed by %s", unix.SignalName(ws.Signal()))
	}
	// ErrWaitDelay: rsync exited, but a child of its own (an ssh master)
	// held its output open; the exit code is still rsync's.
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		return 0, err
	}
	return ps.ExitCode(), nil
}

// rsyncExitMeaning names rsync's exit codes, as rsync(1) lists them.
func rsyncExitMeaning(code int) string {
	switch code {
	case 1:
		return "syntax or usage error"
	case 2:
		return "protocol incompatibility"
	case 3:
		return "errors selecting input/output files, dirs"
	case 5:
		return "error starting client-server protocol"
	case 10:
		return "error in socket I/O"
	case 11:
		return "error in file I/O"
	case 12:
		return "error in rsync protocol data stream"
	case 20:
		return "received SIGUSR1 or SIGINT"
	case 23:
		return "partial transfer due to error"
	case 30:
		return "timeout in data send/receive"
	case 255:
		return "the remote shell failed"
	}
	return "see rsync(1)"
}

// lines is an io.Writer that hands what is written to fn one line at a
// time, each with its terminator: any byte of ends.
type lines struct {
	ends    string
	fn      func(line []byte)
	partial []byte
	// progress, if set, takes rsync's progress lines instead of the
	// writer (outFilter).
	progress func(line string)
}

func (l *lines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexAny(p, l.ends)
		if i < 0 {
			l.partial = append(l.partial, p...)
			break
		}
		l.partial = append(l.partial, p[:i+1]...)
		l.fn(l.partial)
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	// Never fail rsync's output: a closed stdout must not fail the copy.
	return n, nil
}

// flush hands on a last line that has no terminator.
func (l *lines) flush() {
	if len(l.partial) > 0 {
		l.fn(append(l.partial, '\n'))
		l.partial = nil
	}
}

// outFilter passes rsync's stdout on to w, but for the --stats block,
// which it parses into st for the summary line instead. It splits at \r
// as well as at \n, so that a progress line goes through as soon as
// rsync redraws it.
func outFilter(w io.Writer, st *copyStats) *lines {
	l := &lines{ends: "\r\n"}
	l.fn = func(seg []byte) {
		line := string(bytes.TrimRight(seg, "\r\n"))
		if line == "" {
			return // blank lines around the stats block
		}
		for _, p := range statsPrefixes {
			if strings.HasPrefix(line, p) {
				st.stat(line)
				return
			}
		}
		if l.progress != nil && isProgress(line) {
			l.progress(line)
			return
		}
		w.Write(seg)
	}
	return l
}

// statsPrefixes begin the lines of rsync's --info=stats2 block.
var statsPrefixes = []string{"Number of ", "Total ", "Literal data: ", "Matched data: ",
	"File list ", "sent ", "total size is "}

func (st *copyStats) stat(line string) {
	name, value, ok := strings.Cut(line, ": ")
	if !ok {
		return
	}
	switch name {
	case "Number of files":
		st.files = leadingNumber(value)
	case "Total transferred file size":
		st.transferred = leadingNumber(value)
	}
}

// errFilter passes rsync's stderr on to w, but for its "file has
// vanished" lines, which it counts into st, and the exit 24 warning:
// they are expected (a removed directory brings one for every path
// beneath it) and safe, and the round prints one line about them.
func errFilter(w io.Writer, st *copyStats) *lines {
	return &lines{ends: "\n", fn: func(line []byte) {
		switch {
		case bytes.HasPrefix(line, []byte("file has vanished: ")):
			st.vanished++
		case bytes.HasPrefix(line, []byte("rsync warning: some files vanished before they could be transferred")):
		default:
			w.Write(line)
		}
	}}
}

// leadingNumber reads "123,459 bytes" as 123459: the thousands separator
// depends on the locale, so every non-digit of the first word is dropped.
func leadingNumber(s string) int64 {
	word, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	var n int64
	for _, c := range word {
		if c >= '0' && c <= '9' {
			n = n*10 + int64(c-'0')
		}
	}
	return n
}

// destState is what DEST holds before a round.
type destState int

const (
	destMirror     destState = iota // anything else: the mirror that this consumer keeps
	destMissing                     // no such directory (or rsync cannot list it)
	destEmpty                       // an empty directory
	destIncomplete                  // a full copy into it began and did not complete
)

// markerName is the file that marks DEST while a full copy runs. The
// mount refuses .hsm at its root, so no mirrored path can collide with
// it, and the full copy excludes it (neither copies nor deletes it).
const markerName = ".hsm"

const markerText = "hsmfs sync: a full copy into this directory began and has not completed.\n" +
	"The next hsmfs sync copies the whole tree again, then removes this file.\n"

// probe looks at DEST through rsync --list-only, with the transport of
// the copies, so that a local and a remote DEST are looked at alike.
func (r *rsyncer) probe(ctx context.Context, dest string) (destState, error) {
	args := append(r.transport(), "--list-only", dest)
	cmd := exec.CommandContext(ctx, r.prog, args...)
	var errBuf bytes.Buffer // rsync's complaint when DEST is missing is no news
	cmd.Stderr = &errBuf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("look at DEST: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("look at DEST: %w", err)
	}
	entries, marker := 0, false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		switch listedName(sc.Text()) {
		case ".":
		case markerName:
			marker = true
		default:
			entries++
		}
	}
	io.Copy(io.Discard, stdout) // a line too long for the scanner: keep rsync going
	code, err := exitCode(cmd, cmd.Wait())
	switch {
	case err != nil:
		return 0, fmt.Errorf("look at DEST: %s: %w", r.prog, err)
	case code == 23:
		// DEST is missing (or unreadable, or not a directory): a full
		// copy is right in every case, and fails if DEST cannot be made.
		return destMissing, nil
	case code != 0:
		r.stderr.Write(errBuf.Bytes()) // only now: exit 23 is a normal first sync
		return 0, fmt.Errorf("look at DEST: %s --list-only exited %d (%s)", r.prog, code, rsyncExitMeaning(code))
	case marker:
		return destIncomplete, nil
	case entries == 0:
		return destEmpty, nil
	}
	return destMirror, nil
}

// listedName is the name in a line of rsync --list-only: what follows
// the permissions, size, date and time.
func listedName(line string) string {
	for range 4 {
		line = strings.TrimLeft(line, " ")
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return ""
		}
		line = line[i:]
	}
	return strings.TrimPrefix(line, " ")
}

// placeMarker puts the marker into DEST (making DEST, one level, as the
// copy would).
func (r *rsyncer) placeMarker(ctx context.Context, dest string) error {
	dir, err := os.MkdirTemp("", "hsmfs-sync-")
	if err != nil {
		return fmt.Errorf("mark DEST: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, markerName), []byte(markerText), 0o644); err != nil {
		return fmt.Errorf("mark DEST: %w", err)
	}
	if err := r.quiet(ctx, "-r", dir+"/", dest); err != nil {
		return fmt.Errorf("mark DEST: %w", err)
	}
	return nil
}

// removeMarker deletes the marker, and nothing else, from DEST: an empty
// source, --delete, and a filter that lets only the marker be deleted.
func (r *rsyncer) removeMarker(ctx context.Context, dest string) error {
	dir, err := os.MkdirTemp("", "hsmfs-sync-")
	if err != nil {
		return fmt.Errorf("unmark DEST: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := r.quiet(ctx, "-r", "--delete", "--include=/"+markerName, "--exclude=*", dir+"/", dest); err != nil {
		return fmt.Errorf("unmark DEST: %w", err)
	}
	return nil
}

// quiet runs rsync with the transport and args, and nothing on stdout.
func (r *rsyncer) quiet(ctx context.Context, args ...string) error {
	return r.quietCode(ctx, 0, args...)
}

// errQuietCode: rsync exited with the code quietCode expected.
var errQuietCode = errors.New("rsync exited with the expected code")

// quietCode is quiet, where exit code expect (not 0) is no failure:
// it returns errQuietCode, and what rsync said on stderr is dropped.
func (r *rsyncer) quietCode(ctx context.Context, expect int, args ...string) error {
	cmd := exec.CommandContext(ctx, r.prog, append(r.transport(), args...)...)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	code, err := exitCode(cmd, cmd.Run())
	switch {
	case err != nil:
		r.stderr.Write(errBuf.Bytes())
		return fmt.Errorf("%s: %w", r.prog, err)
	case code != 0 && code == expect:
		return errQuietCode
	case code != 0:
		r.stderr.Write(errBuf.Bytes())
		return fmt.Errorf("%s exited %d (%s)", r.prog, code, rsyncExitMeaning(code))
	}
	r.stderr.Write(errBuf.Bytes())
	return nil
}
