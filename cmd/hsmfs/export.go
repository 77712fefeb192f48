package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/natsexport"
)

const exportUsage = `Usage: hsmfs export [options] --nats URL --stream NAME MOUNTPOINT

Publishes the answers of MOUNTPOINT into a NATS JetStream stream, one
message per path, and blesses each answer once the stream has
acknowledged all of its messages. Without --every: one round, then exit.
With it: a round every DURATION until SIGINT or SIGTERM; a failed round
is reported and tried again. See docs/fleet.md.

Options:
  --nats URL          the server(s): nats://host:4222[,nats://host2:4222...]
  --stream NAME       the JetStream stream
  --consumer NAME     the mount's named consumer (default: the mount's own
                      .hsm/changes.json and .hsm/ctl)
  --subject PREFIX    subjects are PREFIX.HOST.MOUNT.CONSUMER (default hsmfs)
  --host NAME         the host name in messages and subjects (default: hostname)
  --every DURATION    run a round every DURATION (e.g. 30s) until stopped
  --creds FILE        NATS credentials file (JWT and seed)
  --timeout DURATION  a message not acknowledged within this fails the
                      round; nothing is blessed (default 30s)
  --max-inflight N    messages published and not yet acknowledged (default 4096)
  --create-stream     create the stream if it does not exist, with:
                      subjects PREFIX.>, file storage, discard new, and
    --max-bytes SIZE    its size (default 1G; K, M, G, T suffixes)
    --max-age DURATION  how long it keeps messages (default: for ever)
    --dup-window DURATION  the duplicate window (default 2m)
    --replicas N        1, or 3 on a three-node cluster (default 1)

Exit codes: 0 done (or stopped by a signal), 1 failed or refused (reason
on stderr; nothing blessed), 2 bad command line.
`

func runExport(args []string) error {
	var (
		cfg      natsexport.Config
		every    time.Duration
		maxBytes string
	)
	mnt, extra, err := oneMountpoint("export", args, func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.URL, "nats", "", "")
		fs.StringVar(&cfg.Stream, "stream", "", "")
		fs.StringVar(&cfg.Consumer, "consumer", "", "")
		fs.StringVar(&cfg.SubjectPrefix, "subject", natsexport.DefaultSubjectPrefix, "")
		fs.StringVar(&cfg.Host, "host", "", "")
		fs.DurationVar(&every, "every", 0, "")
		fs.StringVar(&cfg.CredsFile, "creds", "", "")
		fs.DurationVar(&cfg.AckTimeout, "timeout", natsexport.DefaultAckTimeout, "")
		fs.IntVar(&cfg.MaxInflight, "max-inflight", natsexport.DefaultMaxInflight, "")
		fs.BoolVar(&cfg.CreateStream, "create-stream", false, "")
		fs.StringVar(&maxBytes, "max-bytes", "1G", "")
		fs.DurationVar(&cfg.Limits.MaxAge, "max-age", 0, "")
		fs.DurationVar(&cfg.Limits.DupWindow, "dup-window", natsexport.DefaultDupWindow, "")
		fs.IntVar(&cfg.Limits.Replicas, "replicas", 1, "")
	})
	if err != nil {
		return err
	}
	switch {
	case len(extra) != 0:
		return usagef("takes one MOUNTPOINT")
	case cfg.URL == "":
		return usagef("need --nats URL")
	case cfg.Stream == "":
		return usagef("need --stream NAME")
	case every < 0 || cfg.AckTimeout <= 0 || cfg.MaxInflight <= 0 || cfg.Limits.MaxAge < 0 || cfg.Limits.DupWindow <= 0:
		return usagef("--every, --timeout, --max-inflight, --max-age and --dup-window must be positive")
	case cfg.Limits.Replicas < 1 || cfg.Limits.Replicas > 5:
		return usagef("--replicas must be 1 to 5")
	}
	if cfg.Limits.MaxBytes, err = parseSize(maxBytes); err != nil {
		return usagef("--max-bytes: %v", err)
	}
	if cfg.Consumer != "" {
		if err := natsexport.CheckConsumerName(cfg.Consumer); err != nil {
			return usagef("--consumer: %v", err)
		}
	}
	if err := natsexport.CheckSubjectPrefix(cfg.SubjectPrefix); err != nil {
		return usagef("--subject: %v", err)
	}
	if cfg.Mount, err = filepath.Abs(mnt); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	x, err := natsexport.New(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer x.Close()
	if every == 0 {
		res, err := x.Round(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "hsmfs export:", roundLine(res))
		return nil
	}
	fmt.Fprintf(os.Stderr, "hsmfs export: publishing %s on %s into stream %s every %s\n", cfg.Mount, x.Subject(), cfg.Stream, every)
	return x.Run(ctx, every, reportRounds("export", func(res natsexport.Result) (string, bool) {
		return roundLine(res), res.Count > 0
	}))
}

// reportRounds is what a command that runs rounds with --every says
// about each: a failed round once, and again when the reason changes or
// a minute later (a mount or server that is down fails every round the
// same way), the first round that succeeds after, and a round's line
// when line says it is worth one.
func reportRounds[R any](cmd string, line func(R) (string, bool)) func(R, error) {
	var lastErr string
	var lastErrAt time.Time
	return func(res R, err error) {
		if err != nil {
			if msg := err.Error(); msg != lastErr || time.Since(lastErrAt) > time.Minute {
				fmt.Fprintf(os.Stderr, "hsmfs %s: round failed, will retry: %v\n", cmd, err)
				lastErr, lastErrAt = msg, time.Now()
			}
			return
		}
		if lastErr != "" {
			fmt.Fprintf(os.Stderr, "hsmfs %s: rounds succeed again\n", cmd)
			lastErr = ""
		}
		if l, ok := line(res); ok {
			fmt.Fprintf(os.Stderr, "hsmfs %s: %s\n", cmd, l)
		}
	}
}

func roundLine(r natsexport.Result) string {
	msgs := fmt.Sprintf("%d messages", r.Count)
	if r.Count == 1 {
		msgs = "1 message"
	}
	return fmt.Sprintf("query %d: %s acknowledged (%d duplicates), blessed; query %.3fs, publish %.3fs, bless %.3fs",
		r.Query, msgs, r.Duplicates, r.QueryTime.Seconds(), r.Publish.Seconds(), r.BlessTime.Seconds())
}

// parseSize reads 1073741824, 512M, 1G, 2T (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch strings.ToUpper(s[n-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: a positive number of bytes, with K, M, G or T", s)
	}
	return v * mult, nil
}
