package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"
)

const consumerUsage = `Usage: hsmfs consumer add MOUNTPOINT NAME
       hsmfs consumer rm MOUNTPOINT NAME
       hsmfs consumer list [--json] MOUNTPOINT

Named consumers each query and bless on their own cursor
(.hsm/consumers/NAME/changes, changes.json, ctl; or --consumer NAME on
changes, bless and sync). A record is discarded only once every consumer
has blessed past it. A new consumer's first answer says "full": copy the
whole tree once, then bless it. list shows, per consumer: last query,
last bless, pending paths, and the age of its oldest unblessed change.
Exit codes: 0 done, 1 failed (no such consumer, name taken), 2 bad command line.
`

func runConsumer(args []string) error {
	if len(args) == 0 {
		return usagef("need add, rm or list")
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "add", "rm":
		if len(rest) != 2 {
			return usagef("consumer %s takes MOUNTPOINT and NAME", verb)
		}
		return ctlWrite(rest[0], "consumer "+verb+" "+rest[1])
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

func listConsumers(mnt string, asJSON bool) error {
	m, _, err := readStatus(mnt)
	if err != nil {
		return err
	}
	cs, _ := m["consumers"].([]any)
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(cs)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tLAST QUERY\tLAST BLESS\tPENDING\tOLDEST UNBLESSED\tNOTE")
	for _, x := range cs {
		c, _ := x.(map[string]any)
		note := ""
		for _, k := range []string{"full", "reset", "lagging"} {
			if c[k] == true {
				note += k + " "
			}
		}
		fmt.Fprintf(w, "%v\t%s\t%s\t%v\t%s\t%s\n", c["name"], when(c["last_query"], c["last_query_time"]),
			when(c["last_blessed"], c["last_bless_time"]), c["pending_paths"], age(c["oldest_unblessed_seconds"]), note)
	}
	return w.Flush()
}

// when shows a query id and, if known, how long ago.
func when(id, unix any) string {
	n, _ := id.(float64)
	t, _ := unix.(float64)
	if n == 0 {
		return "-"
	}
	if t == 0 {
		return fmt.Sprintf("%d", int64(n))
	}
	return fmt.Sprintf("%d (%s ago)", int64(n), time.Since(time.Unix(int64(t), 0)).Round(time.Second))
}

func age(v any) string {
	s, _ := v.(float64)
	if s == 0 {
		return "-"
	}
	return (time.Duration(s) * time.Second).String()
}
