package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/metrics"
	"github.com/hsmfs/hsmfs/internal/natsexport"
	hsmsync "github.com/hsmfs/hsmfs/internal/sync"
)

const followUsage = `Usage: hsmfs follow [options] --nats URL --stream NAME --durable NAME
                    SOURCE DEST

Keeps DEST an exact copy of one mount from what hsmfs export publishes:
reads the stream with the durable consumer NAME (explicit acks), and
once it holds a whole answer of the mount, copies its paths from SOURCE
to DEST with the contract's rsync, and only then acknowledges its
messages. SOURCE is the mount point on this host, or host:path over ssh
(or what -e names), as hsmfs sync takes DEST. An answer that says full,
or a stream that dropped messages this follower had not read, is copied
whole (rsync -a --delete). Without --every: read what the stream holds,
copy, exit. With it: a round every DURATION until SIGINT or SIGTERM; a
failed round is reported and tried again. See docs/fleet.md.

Options:
  --nats URL          the server(s): nats://host:4222[,nats://host2:4222...]
  --stream NAME       the JetStream stream
  --durable NAME      the durable consumer: one per follower, kept by the
                      server (a follower started again goes on where it
                      left, and gets again what it had not acknowledged)
  --filter SUBJECT    only the subject(s) of this mount, e.g.
                      hsmfs.HOST.MOUNT.default (docs/fleet.md, "Subjects");
                      needed when the stream holds more than one mount
  --creds FILE        NATS credentials file (JWT and seed)
  --every DURATION    run a round every DURATION (e.g. 30s) until stopped
  -e, --rsh CMD       the remote shell for a host:path SOURCE, passed to rsync
  --rsync-path PATH   the rsync to run on SOURCE's host (default rsync)
  --rsync PROGRAM     the local rsync to run (default: rsync from PATH)
  --metrics ADDR      serve Prometheus metrics on ADDR (host:port) at /metrics

Prints one line per round that copied on stderr. On a terminal rsync
shows its progress on stdout; elsewhere a copy that runs over a second
prints a progress line every 10 seconds.

Exit codes: 0 done (or stopped by a signal), 1 failed or refused (reason
on stderr; what was not copied is not acknowledged), 2 bad command line.
`

func runFollow(args []string) error {
	var (
		cfg     natsexport.FollowConfig
		every   time.Duration
		metAddr string
	)
	fs := flag.NewFlagSet("follow", flag.ContinueOnError)
	fs.StringVar(&cfg.URL, "nats", "", "")
	fs.StringVar(&cfg.Stream, "stream", "", "")
	fs.StringVar(&cfg.Durable, "durable", "", "")
	fs.StringVar(&cfg.Filter, "filter", "", "")
	fs.StringVar(&cfg.CredsFile, "creds", "", "")
	fs.DurationVar(&every, "every", 0, "")
	fs.StringVar(&cfg.Rsync, "rsync", "rsync", "")
	fs.StringVar(&cfg.Rsh, "rsh", "", "")
	fs.StringVar(&cfg.Rsh, "e", "", "")
	fs.StringVar(&cfg.RsyncPath, "rsync-path", "", "")
	fs.StringVar(&metAddr, "metrics", "", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 2:
		return usagef("need SOURCE and DEST")
	case cfg.URL == "":
		return usagef("need --nats URL")
	case cfg.Stream == "":
		return usagef("need --stream NAME")
	case cfg.Durable == "":
		return usagef("need --durable NAME")
	case every < 0:
		return usagef("--every must be positive")
	}
	for i, p := range pos {
		if i == 0 && hsmsync.IsRemote(p) {
			continue
		}
		if pos[i], err = filepath.Abs(p); err != nil {
			return err
		}
	}
	cfg.Source, cfg.Dest = pos[0], pos[1]
	cfg.Progress, cfg.Stdout, cfg.Stderr = isTerminal(os.Stdout), os.Stdout, os.Stderr
	observe := func(natsexport.FollowResult, error) {}
	if metAddr != "" {
		l, err := metrics.Listen(metAddr)
		if err != nil {
			return err
		}
		m := metrics.NewFollow(versionString())
		defer m.Serve(l, nil).Close()
		observe = func(r natsexport.FollowResult, err error) {
			m.ObserveRound(metrics.FollowRound{Messages: r.Messages, Answers: r.Answers, Paths: r.Paths,
				WholePaths: r.WholePaths, Pending: r.Pending, Whole: r.Whole, Bytes: r.Bytes, Lag: r.Lag}, err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f, err := natsexport.NewFollower(ctx, cfg)
	if err != nil {
		return err
	}
	defer f.Close()
	if every == 0 {
		res, err := f.Round(ctx)
		observe(res, err)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "hsmfs follow:", followLine(res))
		return nil
	}
	fmt.Fprintf(os.Stderr, "hsmfs follow: copying %s to %s from stream %s (consumer %s) every %s\n", cfg.Source, cfg.Dest, cfg.Stream, cfg.Durable, every)
	report := reportRounds("follow", func(res natsexport.FollowResult) (string, bool) {
		return followLine(res), res.Answers > 0 || res.Whole
	})
	return f.RunFollow(ctx, every, func(res natsexport.FollowResult, err error) {
		observe(res, err)
		report(res, err)
	})
}

func followLine(r natsexport.FollowResult) string {
	copied := fmt.Sprintf("%d paths copied", r.Paths)
	if r.Whole {
		copied = "the whole tree copied (" + r.WhyWhole + ")"
	}
	line := fmt.Sprintf("%d messages (%d again), %d whole answers: %s (%s transferred), %d names copied whole, %d messages of answers not yet whole kept",
		r.Messages, r.Repeats, r.Answers, copied, hsmctl.BytesIEC(uint64(r.Bytes)), r.WholePaths, r.Pending)
	if r.Lag > 0 {
		line += fmt.Sprintf("; %s behind the mount", r.Lag.Round(time.Millisecond))
	}
	return line
}
