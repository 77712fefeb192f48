package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

const changesUsage = `Usage: hsmfs changes [--consumer NAME] [--json | -0] MOUNTPOINT

Runs one query and prints its answer: the paths changed since the last
bless, one per line (rsync --files-from format). The query id is printed
on stderr, and a line "full: ..." when the answer says full: the consumer
is new or was reset, or the mount could not list what was removed around
hsmfs, so copy the whole tree once, then hsmfs bless --full.

Options:
  --json             print the JSON Lines answer (.hsm/changes.json)
  -0                 print the paths NUL-separated, names with newlines
                     included (rsync --from0)
  --consumer NAME    query for the named consumer (.hsm/consumers/NAME/)

Exit codes: 0 answered, 1 failed, 2 bad command line.
`

const blessUsage = `Usage: hsmfs bless [--consumer NAME] [--full] [--by WHO] [ID] MOUNTPOINT

Tells hsmfs that the answer of query ID (default: the latest query) has
been used safely: BACKING is synced, then the records of every period
before ID are discarded (once every consumer has blessed past them).
Returns once the bless is durable.

Options:
  --full             the whole tree was copied: required for the first
                     bless after an answer said full (a new consumer, a
                     reset, a lost index); without it that bless is refused
  --by WHO           who blessed, as status and the next answer show it
                     (default: "hsmfs bless by USER")
  --consumer NAME    bless for the named consumer

Exit codes: 0 blessed, 1 failed (an ID that no query returned, a full
answer blessed without --full), 2 bad command line.
`

const checkpointUsage = `Usage: hsmfs checkpoint MOUNTPOINT

Starts a new period and waits for the modifications of the earlier ones
to complete.

Exit codes: 0 done, 1 failed, 2 bad command line.
`

// oneMountpoint parses a command line that ends in MOUNTPOINT: the flags
// that setup defines, anywhere, and the positional arguments before it.
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
	c, err := hsmctl.Open(mnt, consumer)
	if err != nil {
		return err
	}
	// Read as it comes: the daemon renders a big answer chunk by chunk,
	// and neither side holds it whole.
	a, err := c.Query()
	if err != nil {
		return err
	}
	defer a.Close()
	h := a.Header
	fmt.Fprintf(os.Stderr, "query %d\n", h.Query)
	if h.Full {
		// The paths alone cannot make the copy exact (a new or reset
		// consumer, or changes made around hsmfs that could not be
		// listed): say so where a script's user sees it.
		fmt.Fprintf(os.Stderr, "full: this answer cannot update a copy; copy the whole tree once "+
			"(rsync -a -I --delete --exclude=/.hsm %s/ DEST/, or hsmfs sync), then hsmfs bless --full %d %s\n", mnt, h.Query, mnt)
	}
	w := bufio.NewWriter(os.Stdout)
	if asJSON {
		w.Write(a.HeaderRaw)
		w.WriteByte('\n')
		if _, err := io.Copy(w, a); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		return w.Flush()
	}
	for {
		line, err := a.Next()
		if err != nil {
			return err
		}
		if line == nil {
			break
		}
		e, err := hsmctl.DecodeEntry(line)
		if err != nil {
			return fmt.Errorf("query %d: %w", h.Query, err)
		}
		switch {
		case e.Shadowed: // as the plain answer: rsync would fail on it
		case nul:
			w.WriteString(e.Path)
			w.WriteByte(0)
		case !bytes.ContainsRune([]byte(e.Path), '\n'):
			w.WriteString(e.Path)
			w.WriteByte('\n')
		}
	}
	return w.Flush()
}

func runBless(args []string) error {
	var consumer, by string
	var full bool
	mnt, extra, err := oneMountpoint("bless", args, func(fs *flag.FlagSet) {
		fs.StringVar(&consumer, "consumer", "", "")
		fs.BoolVar(&full, "full", false, "")
		fs.StringVar(&by, "by", "", "")
	})
	if err != nil {
		return err
	}
	var id uint64
	switch len(extra) {
	case 0:
	case 1:
		if id, err = strconv.ParseUint(extra[0], 10, 64); err != nil || id == 0 {
			return usagef("ID must be a query id, a positive number: %q", extra[0])
		}
	default:
		return usagef("takes at most ID and MOUNTPOINT")
	}
	if by == "" {
		by = "hsmfs bless by " + userName()
	}
	c, err := hsmctl.Open(mnt, consumer)
	if err != nil {
		return err
	}
	return commandErr(c.Bless(id, full, by))
}

// userName names the user for "hsmfs bless by USER".
func userName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// commandErr shows a refused command by ctl's reason alone (the errno is
// EINVAL, ENOENT, ... of the write, which the reason says better).
func commandErr(err error) error {
	var ce *hsmctl.CommandError
	if errors.As(err, &ce) && ce.Reason != "" {
		return errors.New(ce.Reason)
	}
	return err
}

func runCheckpoint(args []string) error {
	mnt, extra, err := oneMountpoint("checkpoint", args, nil)
	if err != nil {
		return err
	}
	if len(extra) != 0 {
		return usagef("takes one MOUNTPOINT")
	}
	c, err := hsmctl.Open(mnt, "")
	if err != nil {
		return err
	}
	return commandErr(c.Do(hsmctl.Command{Verb: hsmctl.VerbCheckpoint}))
}
