package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

const statusUsage = `Usage: hsmfs status [--json] MOUNTPOINT

Prints the mount's state: its daemon, BACKING, JOURNAL and the free
space of the journal's disk, the current period, the last query and
bless, pending paths, modifications in flight, whether it recovered from
a crash, the check for changes made while it was not running, the nodes
held for the kernel (the node budget), and the consumers, as hsmfs
consumer list shows them. --json prints .hsm/status as it is
(docs/usage.md lists its fields).

Exit codes: 0 printed, 1 not an hsmfs mount or failed, 2 bad command
line.
`

func runStatus(args []string) error {
	var asJSON bool
	mnt, extra, err := oneMountpoint("status", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
	if err != nil {
		return err
	}
	if len(extra) != 0 {
		return usagef("takes one MOUNTPOINT")
	}
	st, data, err := mountStatus(mnt)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := os.Stdout.Write(data)
		return err
	}
	var b bytes.Buffer
	writeStatus(&b, st, time.Now())
	_, err = os.Stdout.Write(b.Bytes())
	return err
}

// writeStatus renders st for people: one aligned block, then the
// consumers' table.
func writeStatus(w io.Writer, st *hsmctl.Status, now time.Time) {
	var rows [][2]string
	add := func(k, format string, args ...any) { rows = append(rows, [2]string{k, fmt.Sprintf(format, args...)}) }
	add("mountpoint", "%s (daemon pid %d, mounted %s, run %d)", st.Mountpoint, st.Pid, ago(st.Mounted, now), st.Run)
	add("backing", "%s", st.Backing)
	add("journal", "%s (%s free on its disk, reserve %s)", st.Journal, hsmctl.BytesIEC(st.JournalFree), hsmctl.BytesIEC(st.JournalReserve))
	if st.JournalLow {
		add("WARNING", "the journal's disk is below its reserve: every modification fails with ENOSPC until space is freed")
	}
	add("period", "%d", st.CurrentPeriod)
	add("pending", "%s", plural(int64(st.PendingPaths), "path"))
	add("in flight", "%s, %s open for writing", plural(st.InFlight, "modification"), plural(int64(st.OpenForWrite), "file"))
	if st.Recovered {
		add("recovered", "yes: hsmfs did not stop cleanly; the next answer lists what was in flight")
	} else {
		add("recovered", "no")
	}
	switch {
	case st.OutsideCheck == "":
	case st.OutsideFound > 0:
		add("outside check", "%s, %s found", st.OutsideCheck, plural(int64(st.OutsideFound), "path"))
	default:
		add("outside check", "%s", st.OutsideCheck)
	}
	add("journal syncs", "%d", st.JournalSyncs)
	add("nodes", "%d held for the kernel, %d pruned", st.Nodes, st.NodesPruned)
	if st.Metrics != "" {
		add("metrics", "http://%s/metrics", st.Metrics)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	tw.Flush()
	fmt.Fprintln(w)
	writeConsumers(w, st.Consumers, now)
}

// writeConsumers is the table of hsmfs consumer list; no line ends in
// spaces.
func writeConsumers(w io.Writer, cs []hsmctl.ConsumerStatus, now time.Time) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tLAST QUERY\tLAST BLESS\tPENDING\tOLDEST UNBLESSED\tNOTE\tBLESSED BY")
	for _, c := range cs {
		var notes []string
		for _, n := range []struct {
			on   bool
			word string
		}{{c.Full, "full"}, {c.Reset, "reset"}, {c.Lagging, "lagging"}} {
			if n.on {
				notes = append(notes, n.word)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", c.Name, when(c.LastQuery, c.LastQueryTime, now),
			when(c.LastBlessed, c.LastBlessTime, now), c.PendingPaths, age(c.OldestUnblessed),
			orDash(strings.Join(notes, ",")), orDash(c.BlessedBy))
	}
	tw.Flush()
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		io.WriteString(w, strings.TrimRight(line, " \n")+strings.Repeat("\n", strings.Count(line, "\n")))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// when shows a query id and, if known, how long ago it was.
func when(id uint64, unix int64, now time.Time) string {
	if id == 0 {
		return "-"
	}
	if unix == 0 {
		return fmt.Sprint(id)
	}
	return fmt.Sprintf("%d (%s)", id, ago(unix, now))
}

// ago is how long before now the unix time t was: "3m ago".
func ago(t int64, now time.Time) string {
	if t == 0 {
		return "never"
	}
	d := now.Sub(time.Unix(t, 0))
	if d < time.Second {
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// age is an age in seconds as a short duration, "-" for none.
func age(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return shortDuration(time.Duration(seconds * float64(time.Second)))
}

// shortDuration keeps the two largest units: 42s, 3m, 3m12s, 2h5m, 3d4h.
func shortDuration(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return trimZero(fmt.Sprintf("%dm%ds", s/60, s%60), "0s")
	case s < 86400:
		return trimZero(fmt.Sprintf("%dh%dm", s/3600, s%3600/60), "0m")
	}
	return trimZero(fmt.Sprintf("%dd%dh", s/86400, s%86400/3600), "0h")
}

func trimZero(s, zero string) string {
	if strings.HasSuffix(s, zero) && len(s) > len(zero) && !isDigit(s[len(s)-len(zero)-1]) {
		return strings.TrimSuffix(s, zero)
	}
	return s
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// plural is "1 path", "2 paths".
func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// mountStatus reads .hsm/status of mnt: parsed, and its text.
func mountStatus(mnt string) (*hsmctl.Status, []byte, error) {
	c, err := hsmctl.Open(mnt, "")
	if err != nil {
		return nil, nil, err
	}
	return c.Status()
}

// listConsumers is hsmfs consumer list.
func listConsumers(mnt string, asJSON bool) error {
	st, _, err := mountStatus(mnt)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(st.Consumers)
	}
	writeConsumers(os.Stdout, st.Consumers, time.Now())
	return nil
}
