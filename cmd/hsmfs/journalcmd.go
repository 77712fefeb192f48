package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/journal"
)

const journalUsage = `Usage: hsmfs journal check [--json] JOURNAL
       hsmfs journal dump JOURNAL
       hsmfs journal reset JOURNAL

Each works on a journal that is not mounted (one in use is refused).

check   checks the metadata, the format and every record, and prints
        what it found (--json: as one JSON object)
dump    prints the journal's metadata and state, then every record, one
        per line: period, seq, run, op, flags, completed, path, path2,
        ino, parent, parent2, ino2, consumer, names
reset   the deliberate way to start over after a damaged journal: moves
        JOURNAL aside to JOURNAL.reset-TIMESTAMP, and its log, tree index
        and log of names (JOURNAL.log, .tree, .tree.log) beside it
        (nothing is deleted), so that the next mount starts afresh. The
        fresh journal knows nothing of earlier changes: copy the whole
        tree to your mirror once afterwards (hsmfs sync --full). The
        HSM's tiers and file states are carried into the fresh journal,
        so that released files stay restorable

Exit codes: 0 sound, dumped or moved aside, 1 damaged, in use or
failed, 2 bad command line.
`

func runJournal(args []string) error {
	// What badger may write while a tool opens the journal is as private
	// as what the daemon writes.
	syscall.Umask(0o077)
	var asJSON bool
	fs := flag.NewFlagSet("journal", flag.ContinueOnError)
	fs.BoolVar(&asJSON, "json", false, "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "check" && pos[0] != "reset" && pos[0] != "dump") {
		return usagef("need check, dump or reset, and JOURNAL")
	}
	if asJSON && pos[0] != "check" {
		return usagef("--json goes with check")
	}
	dir := pos[1]
	switch pos[0] {
	case "dump":
		return dumpJournal(os.Stdout, dir)
	case "reset":
		to, n, err := journal.ResetKeepingTable(dir)
		if err != nil {
			return err
		}
		fmt.Printf("journal %s moved aside to %s (with its log and tree index, if any); "+
			"the next mount starts a fresh journal: copy the whole tree to your mirrors once (hsmfs sync --full)\n", dir, to)
		if n > 0 {
			fmt.Printf("carried the HSM's %d rows (tiers, file states) into the fresh journal: released files stay restorable\n", n)
		}
		return nil
	}
	rep, err := journal.Check(dir)
	if asJSON {
		json.NewEncoder(os.Stdout).Encode(reportJSON(rep, err))
	} else if err == nil || rep.Format != 0 {
		writeReport(os.Stdout, rep)
	}
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Printf("journal %s is sound\n", dir)
	}
	return nil
}

// dumpJournal prints the metadata, then one tab-separated line per
// record under a header line.
func dumpJournal(out io.Writer, dir string) error {
	w := bufio.NewWriter(out)
	defer w.Flush()
	return journal.Dump(dir, func(rep journal.Report) {
		writeMeta(w, rep)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "period\tseq\trun\top\tflags\tcompleted\tpath\tpath2\tino\tparent\tparent2\tino2\tconsumer\tnames")
	}, func(r *checkpoint.Record, completed bool) {
		fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%d\t%t\t%q\t%q\t%d\t%d\t%d\t%d\t%q\t%d\n", r.Period, r.Seq, r.Run, r.Op, r.Flags, completed,
			r.Path, r.Path2, r.Ino, r.Parent, r.Parent2, r.Ino2, r.Consumer, len(r.Names))
	})
}

// writeReport prints what check found, aligned, with the state.
func writeReport(out io.Writer, rep journal.Report) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	writeMeta(w, rep)
	fmt.Fprintf(w, "records:\t%d in %d periods (%d to %d), %d damaged\n", rep.Records, rep.Periods, rep.MinPeriod, rep.MaxPeriod, rep.Damaged)
	fmt.Fprintf(w, "completions:\t%d (%d without their record: harmless)\n", rep.Completions, rep.Orphans)
	w.Flush()
}

// writeMeta prints the journal's metadata and state, one field a line.
func writeMeta(out io.Writer, rep journal.Report) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	opened := "read-only"
	if !rep.ReadOnly {
		opened = "read-write (badger replayed its log)"
	}
	fmt.Fprintf(w, "journal:\t%s\n", rep.Dir)
	fmt.Fprintf(w, "format:\t%d\n", rep.Format)
	fmt.Fprintf(w, "backing:\t%s\n", rep.Backing)
	fmt.Fprintf(w, "opened:\t%s\n", opened)
	fmt.Fprintf(w, "next seq:\t%d\n", rep.NextSeq)
	for _, f := range stateFields(rep.State) {
		fmt.Fprintf(w, "%s:\t%v\n", strings.ReplaceAll(f.name, "_", " "), f.value)
	}
	w.Flush()
}

type field struct {
	name  string
	value any
}

// stateFields are the documented names (docs/usage.md, "hsmfs journal")
// of a journal's state, in order.
func stateFields(st checkpoint.State) []field {
	fs := []field{{"current_period", st.Current}, {"last_query", st.LastQuery}, {"last_blessed", st.LastBlessed},
		{"last_query_time", unixTime(st.QueryTime)}, {"last_bless_time", unixTime(st.BlessTime)},
		{"blessed_by", st.BlessedBy}, {"run", st.Run}, {"clean", st.Clean}, {"full", st.Full},
		{"recovered_at", st.RecoveredAt}, {"last_unclean_run", st.LastUncleanRun}, {"not_queries", periods(st.NotQueries)}}
	for _, c := range st.Consumers {
		fs = append(fs, field{"consumer", fmt.Sprintf("%s: last_query %d, last_blessed %d, queries %s, recovered_at %d, full %t, reset %t, added %s, last_query_time %s, last_bless_time %s, blessed_by %q",
			c.Name, c.LastQuery, c.LastBlessed, periods(c.Queries), c.RecoveredAt, c.Full, c.Reset,
			unixTime(c.Added), unixTime(c.QueryTime), unixTime(c.BlessTime), c.BlessedBy)})
	}
	return fs
}

func unixTime(t int64) string {
	if t == 0 {
		return "never"
	}
	return time.Unix(t, 0).UTC().Format(time.RFC3339)
}

func periods(ps []uint64) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.FormatUint(p, 10)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// reportJSON is check --json: the report in snake_case, and the error.
func reportJSON(rep journal.Report, err error) map[string]any {
	m := map[string]any{"journal": rep.Dir, "format": rep.Format, "backing": rep.Backing, "read_only": rep.ReadOnly,
		"next_seq": rep.NextSeq, "records": rep.Records, "damaged": rep.Damaged, "periods": rep.Periods,
		"min_period": rep.MinPeriod, "max_period": rep.MaxPeriod, "completions": rep.Completions, "orphans": rep.Orphans,
		"sound": err == nil}
	if err != nil {
		m["error"] = err.Error()
	}
	st := map[string]any{}
	for _, f := range stateFields(rep.State) {
		if f.name != "consumer" {
			st[f.name] = f.value
		}
	}
	cs := make([]map[string]any, 0, len(rep.State.Consumers))
	for _, c := range rep.State.Consumers {
		cs = append(cs, map[string]any{"name": c.Name, "last_query": c.LastQuery, "last_blessed": c.LastBlessed,
			"queries": c.Queries, "recovered_at": c.RecoveredAt, "full": c.Full, "reset": c.Reset, "added": c.Added,
			"last_query_time": c.QueryTime, "last_bless_time": c.BlessTime, "blessed_by": c.BlessedBy})
	}
	st["consumers"] = cs
	st["last_query_time"], st["last_bless_time"] = rep.State.QueryTime, rep.State.BlessTime
	st["not_queries"] = rep.State.NotQueries
	m["state"] = st
	return m
}
