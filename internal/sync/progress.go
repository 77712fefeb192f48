package sync

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// When stdout is not a terminal (a log, a pipe), rsync's progress line,
// which it redraws in place, would make one line per file. hsmfs sync
// asks rsync for it anyway and prints it as a line of its own now and
// then: first once a copy has run progressFirst, then every
// progressEvery, so that a log shows that a long copy is alive.
const (
	progressFirst = time.Second
	progressEvery = 10 * time.Second
)

// progressLine is rsync's --info=progress2 line: bytes, percent, rate,
// elapsed, and (xfr#N, to-chk=LEFT/TOTAL) or ir-chk while the file list
// is still being built.
var progressLine = regexp.MustCompile(`^\s*([\d,.]+)\s+\d+%\s+(\S+)\s+\S+(?:\s+\(xfr#(\d+), (?:to|ir)-chk=(\d+)/(\d+)\))?`)

func isProgress(line string) bool { return progressLine.MatchString(line) }

// progressTicker prints one progress line per interval.
type progressTicker struct {
	w           io.Writer
	cmd         string // "sync": hsmfs sync's lines
	first       time.Duration
	every       time.Duration
	start, next time.Time
}

// begin starts the clock of a copy.
func (p *progressTicker) begin() {
	p.start = time.Now()
	p.next = p.start.Add(p.first)
}

// line takes one progress line of rsync's; it prints it if its time has
// come.
func (p *progressTicker) line(l string) {
	now := time.Now()
	if now.Before(p.next) {
		return
	}
	p.next = now.Add(p.every)
	fmt.Fprintf(p.w, "%s hsmfs %s: copying for %s: %s\n", stamp(), p.cmd, now.Sub(p.start).Round(time.Second), describeProgress(l))
}

// describeProgress turns rsync's progress line into words: bytes and
// files transferred, and paths checked of those known so far.
func describeProgress(l string) string {
	m := progressLine.FindStringSubmatch(l)
	if m == nil {
		return strings.TrimSpace(l)
	}
	bytes := int64(atoi(strings.NewReplacer(",", "", ".", "").Replace(m[1])))
	out := plural(bytes, "byte")
	if m[3] != "" {
		left, total := atoi(m[4]), atoi(m[5])
		out = fmt.Sprintf("%s, %s transferred, %d of %d paths checked", out, plural(int64(atoi(m[3])), "file"), total-left, total)
	}
	return out + " (" + m[2] + ")"
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
