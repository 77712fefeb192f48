package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/hsmrun"
)

const hsmRunUsage = `Usage: hsmfs hsm run [options] MOUNTPOINT

The HSM's policy daemon. It is a named consumer of the mount: each
round it reads the consumer's answer (the files that changed), keeps
them as candidates, and blesses it; then it archives every candidate
whose last change is older than --archive-after, and, when BACKING's
file system is more than --release-above full, releases archived files,
least recently opened first, until usage is at or below --release-to.
Only the consumer's first answer walks the tree.

Options:
  --archive-after D  archive files unchanged for D (default 30m)
  --release-above P% release when BACKING's file system is fuller than P%
                     (default 85%; 0 never releases)
  --release-to P%    release down to P% (default 80%)
  --min-size SIZE    neither archive nor release files smaller than SIZE
                     (default 64K; K, M, G)
  --tier ID          archive to tier ID (default the mount's lowest)
  --jobs N           archives and releases at a time (default 8)
  --every D          a round every D until SIGINT or SIGTERM (default 1m)
  --once             one round, then exit
  --consumer NAME    the named consumer (default hsm; added if missing)
  --state FILE       what it keeps between rounds (default under the
                     state directory, one per consumer and mount)

Files marked norelease or noarchive (hsmfs hsm set) are left alone. One
line per round reports what it did.

Exit codes: 0 done (--once) or stopped by a signal, 1 failed, 2 bad
command line.
`

func runHSMRun(args []string) error {
	fs := flag.NewFlagSet("hsm run", flag.ContinueOnError)
	o := hsmrun.Options{Out: os.Stdout}
	var above, to, minSize string
	var every time.Duration
	var once bool
	var tierID uint
	fs.DurationVar(&o.ArchiveAfter, "archive-after", 30*time.Minute, "")
	fs.StringVar(&above, "release-above", "85%", "")
	fs.StringVar(&to, "release-to", "80%", "")
	fs.StringVar(&minSize, "min-size", "64K", "")
	fs.UintVar(&tierID, "tier", 0, "")
	fs.IntVar(&o.Jobs, "jobs", 8, "")
	fs.DurationVar(&every, "every", time.Minute, "")
	fs.BoolVar(&once, "once", false, "")
	fs.StringVar(&o.Consumer, "consumer", "hsm", "")
	fs.StringVar(&o.State, "state", "", "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("hsm run takes one MOUNTPOINT")
	}
	if o.ReleaseAbove, err = percent(above); err != nil {
		return usagef("--release-above: %v", err)
	}
	if o.ReleaseTo, err = percent(to); err != nil {
		return usagef("--release-to: %v", err)
	}
	if o.MinSize, err = parseSize(minSize); err != nil {
		return usagef("--min-size: %v", err)
	}
	if err := hsmctl.CheckConsumer(o.Consumer); err != nil {
		return usagef("%v", err)
	}
	if every <= 0 || o.Jobs < 1 {
		return usagef("--every and --jobs take positive values")
	}
	o.Tier = uint32(tierID)
	if o.Mountpoint, err = filepath.Abs(pos[0]); err != nil {
		return err
	}
	if o.State == "" {
		sum := sha256.Sum256([]byte(o.Mountpoint))
		o.State = filepath.Join(filepath.Dir(defaultJournal(o.Mountpoint)), "hsm-run-"+o.Consumer+"-"+hex.EncodeToString(sum[:6])+".json")
	}
	r, err := hsmrun.New(o)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		rep, err := r.Round(ctx)
		fmt.Println(rep)
		if err != nil {
			return err
		}
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// percent reads "85%" or "85".
func percent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("bad percentage %q: 0 to 100, with or without %%", s)
	}
	return v, nil
}
