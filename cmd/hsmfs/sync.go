package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	hsmsync "github.com/hsmfs/hsmfs/internal/sync"
	"golang.org/x/sys/unix"
)

const syncUsage = `Usage: hsmfs sync [options] MOUNTPOINT DEST [-- RSYNC_ARGS...]

Keeps DEST an exact copy of the mount. A round runs a query, copies its
answer with rsync (rsync -a -I --from0 --files-from=LIST
--delete-missing-args --force MOUNTPOINT/ DEST/), and blesses that query
(bless ID) only if rsync succeeded: exit 0, or 24 (what vanished changed
after the query began, so the next answer lists it). DEST is a local
directory or host:path (over ssh, or what -e names).

Each bless says "by sync DEST", and the next answer's header names who
made the consumer's last bless: that is how a round knows which answer
it last copied into this DEST. The round copies the whole tree instead
(rsync -a -I --delete --exclude=/.hsm) when --full is given, when the
answer says full (a new named consumer, one reset for lagging, or a
mount that could not list what was removed around hsmfs), when no query
of the mount was ever blessed, when DEST does not exist or is empty,
when an earlier full copy into DEST did not complete (DEST/.hsm marks
it while one runs), or when the consumer's last bless was not made by
hsmfs sync into this DEST (hsmfs bless, a bless written to ctl, another
program, an older hsmfs sync). The full copy deletes from DEST what the
mount does not hold.

One consumer keeps one mirror: when its last bless was made by hsmfs
sync into another DEST, the round is refused (exit 1, nothing blessed).
Give each DEST its own consumer (--consumer), or run with --full once to
make this DEST the consumer's mirror.

Options:
  --every DURATION   a round every DURATION (30s, 5m, ...) until SIGINT or
                     SIGTERM, which stop the current rsync (nothing is
                     blessed then) and exit; a failed round is retried
  --full             copy the whole tree (in the first round)
  -n, --dry-run      run the query and rsync --dry-run --itemize-changes:
                     print what would be copied; never bless
  -e, --rsh CMD      the remote shell, passed to rsync
  --rsync-path PATH  the rsync to run on the remote host, passed to rsync
  --rsync PROGRAM    the local rsync to run (default: rsync from PATH)
  --consumer NAME    whose answers to use (default: the mount's own)
  RSYNC_ARGS         more rsync options for every copy, after its own

Prints one line per round on stdout: the query id, the paths, the bytes
transferred, the seconds (with --every, after the time). On a terminal
rsync shows its progress; elsewhere a copy that runs over a second
prints a progress line every 10 seconds.

Exit codes: 0 synced and blessed (with --every: stopped by SIGINT or
SIGTERM, and the last round synced or was the one stopped), 1 failed and
nothing blessed (with --every: the last round before the signal failed),
2 bad command line.
`

func runSync(args []string) error {
	own, rsyncArgs := splitAtDashes(args)
	o := hsmsync.Options{Extra: rsyncArgs, Stdout: os.Stdout, Stderr: os.Stderr}
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.StringVar(&o.Consumer, "consumer", "", "")
	fs.BoolVar(&o.Full, "full", false, "")
	fs.BoolVar(&o.DryRun, "dry-run", false, "")
	fs.BoolVar(&o.DryRun, "n", false, "")
	fs.Func("every", "", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("need a positive duration such as 30s or 5m")
		}
		o.Every = d
		return nil
	})
	fs.StringVar(&o.Rsh, "rsh", "", "")
	fs.StringVar(&o.Rsh, "e", "", "")
	fs.StringVar(&o.RsyncPath, "rsync-path", "", "")
	fs.StringVar(&o.Rsync, "rsync", "rsync", "")
	pos, err := parseInterspersed(fs, own)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] == "" || pos[1] == "" {
		return usagef("takes MOUNTPOINT and DEST")
	}
	if err := hsmctl.CheckConsumer(o.Consumer); err != nil {
		return usagef("%v", err)
	}
	o.Mountpoint, o.Dest = pos[0], pos[1]
	o.Progress = isTerminal(os.Stdout)

	// SIGINT and SIGTERM end the current round cleanly (rsync gets
	// SIGTERM, nothing is blessed) instead of killing hsmfs mid-round.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return hsmsync.Run(ctx, o)
}

// splitAtDashes splits the arguments at the first "--": what follows is
// for rsync.
func splitAtDashes(args []string) (own, rest []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	return args, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
