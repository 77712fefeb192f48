package main

import (
	"flag"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

const consumerUsage = `Usage: hsmfs consumer add MOUNTPOINT NAME
       hsmfs consumer rm MOUNTPOINT NAME
       hsmfs consumer list [--json] MOUNTPOINT

Named consumers each query and bless on their own cursor
(.hsm/consumers/NAME/changes, changes.json, ctl; or --consumer NAME on
changes, bless and sync). A record is discarded only once every consumer
has blessed past it. A new consumer's first answer says "full": copy the
whole tree once, then bless it with hsmfs bless --full (hsmfs sync
does both). list shows, per consumer: last query and bless and how long
ago, pending paths, the age of its oldest unblessed change, full, reset
or lagging, and who made the last bless.

Names: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot, not
"default" (the mount's own consumer, .hsm/changes).

Exit codes: 0 done, 1 failed (no such consumer, name taken), 2 bad
command line.
`

func runConsumer(args []string) error {
	if len(args) == 0 {
		return usagef("need add, rm or list")
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	case "add", "rm":
		mnt, pos, err := oneMountpoint("consumer "+verb, rest, nil)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("consumer %s takes MOUNTPOINT and NAME", verb)
		}
		// MOUNTPOINT comes first here: oneMountpoint took the last.
		mnt, name := pos[0], mnt
		c, err := hsmctl.Open(mnt, "")
		if err != nil {
			return err
		}
		v := hsmctl.VerbConsumerAdd
		if verb == "rm" {
			v = hsmctl.VerbConsumerRemove
		}
		return commandErr(c.Do(hsmctl.Command{Verb: v, Name: name}))
	case "list":
		var asJSON bool
		mnt, extra, err := oneMountpoint("consumer list", rest, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
		if err != nil {
			return err
		}
		if len(extra) != 0 {
			return usagef("consumer list takes one MOUNTPOINT")
		}
		return listConsumers(mnt, asJSON)
	}
	return usagef("unknown consumer command %q (add, rm, list)", verb)
}
