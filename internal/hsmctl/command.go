package hsmctl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The commands that ctl takes, one per write:
//
//	checkpoint                    start a new period
//	bless [ID] [full] [by WHO]    bless query ID (default: the latest)
//	consumer add NAME             register a named consumer
//	consumer rm NAME              forget a named consumer
//	tier add ID URL               add an archive tier
//	tier rm ID                    remove a tier that holds no archive
//	norecall PID                  process PID and its descendants read
//	                              released files from the tier, without
//	                              a restore (hsmfs sync, follow)
//
// "full" says that the consumer copied the whole tree: the first bless
// of an answer that says full must carry it, so that a consumer that
// cannot see the header (a reader of the plain answer) cannot end the
// requirement without the copy. "by WHO" names who blessed (hsmfs sync
// into which DEST, an exporter, ...): the answers' header and status
// show it, so that a program keeping a copy notices a bless that it did
// not make. WHO is the rest of the line. A consumer's own ctl takes only
// bless.

// Verb is what a command does.
type Verb int

const (
	VerbCheckpoint Verb = iota + 1
	VerbBless
	VerbConsumerAdd
	VerbConsumerRemove
	VerbTierAdd
	VerbTierRemove
	VerbNoRecall
)

// Command is one command written to ctl.
type Command struct {
	Verb Verb
	// Bless: the query to bless (0: the latest), whether the consumer
	// copied the whole tree, and who blessed.
	ID   uint64
	Full bool
	By   string
	// Name is the consumer of consumer add and rm.
	Name string
	// Tier and URL are tier add's and rm's.
	Tier uint32
	URL  string
}

// MaxBy is the longest WHO of "bless ... by WHO", in bytes.
const MaxBy = 512

// ErrBadCommand is wrapped by every error of ParseCommand.
var ErrBadCommand = errors.New("bad command")

// Usage is what the mount's ctl says of the commands.
const Usage = `hsmfs control file. Write one command:
  checkpoint          start a new period
  bless               bless the latest query
  bless ID            bless query ID: discard the records of every period before ID
  bless ID full       the same, after copying the whole tree (required once
                      an answer said full: a new consumer, a reset, a lost index)
  ... by WHO          (after any bless) record who blessed: status shows it
  consumer add NAME   register a named consumer (.hsm/consumers/NAME/)
  consumer rm NAME    forget a named consumer
  tier add ID URL     add archive tier ID: dir:///PATH or s3://BUCKET/PREFIX?endpoint=URL
  tier rm ID          remove tier ID (refused while it holds archived files)
  norecall PID        process PID and its descendants read released files
                      from their tier, without restoring them (hsmfs sync)
`

// ConsumerUsage is what a named consumer's ctl says.
const ConsumerUsage = `hsmfs control file of one consumer. Write one command:
  bless               bless this consumer's latest query
  bless ID            bless this consumer's query ID
  bless ID full       the same, after copying the whole tree (required once
                      an answer said full)
  ... by WHO          (after any bless) record who blessed
`

// ParseCommand parses what was written to ctl: exactly one command, with
// or without its newline. Its errors say what is wrong, for the reader
// of ctl.
func ParseCommand(text string) (Command, error) {
	line := strings.TrimSuffix(text, "\n")
	if strings.ContainsAny(line, "\n\x00") || strings.TrimSpace(line) == "" {
		return Command{}, fmt.Errorf("%w: malformed command %q: write exactly one command", ErrBadCommand, text)
	}
	f := strings.Fields(line)
	bad := func(why string) (Command, error) {
		return Command{}, fmt.Errorf("%w: %q: %s", ErrBadCommand, line, why)
	}
	switch {
	case f[0] == "checkpoint" && len(f) == 1:
		return Command{Verb: VerbCheckpoint}, nil
	case f[0] == "consumer" && len(f) == 3 && (f[1] == "add" || f[1] == "rm"):
		v := VerbConsumerAdd
		if f[1] == "rm" {
			v = VerbConsumerRemove
		}
		return Command{Verb: v, Name: f[2]}, nil
	case f[0] == "tier":
		return parseTier(f, bad)
	case f[0] == "norecall":
		pid, err := strconv.ParseUint(f[len(f)-1], 10, 31)
		if len(f) != 2 || err != nil || pid == 0 {
			return bad("norecall takes a process id")
		}
		return Command{Verb: VerbNoRecall, ID: pid}, nil
	case f[0] != "bless":
		return bad("unknown command (commands: checkpoint, bless [ID] [full] [by WHO], consumer add NAME, consumer rm NAME, tier add ID URL, tier rm ID, norecall PID)")
	}
	head, by, hasBy := cutWord(line, "by")
	c := Command{Verb: VerbBless}
	rest := strings.Fields(head)[1:]
	if len(rest) > 0 && rest[0] != "full" {
		id, err := strconv.ParseUint(rest[0], 10, 64)
		if err != nil || id == 0 {
			return bad("bless takes a query id, a positive number")
		}
		c.ID, rest = id, rest[1:]
	}
	if len(rest) > 0 && rest[0] == "full" {
		c.Full, rest = true, rest[1:]
	}
	if len(rest) > 0 {
		return bad("bless takes [ID] [full] [by WHO]")
	}
	if hasBy {
		c.By = strings.TrimSpace(by)
		if err := checkBy(c.By); err != nil {
			return bad(err.Error())
		}
	}
	return c, nil
}

// cutWord cuts line before the first field that is word: what comes
// before, and the rest of the line after it.
func cutWord(line, word string) (head, rest string, found bool) {
	blank := func(b byte) bool { return b == ' ' || b == '\t' }
	for i := 0; i < len(line); {
		for i < len(line) && blank(line[i]) {
			i++
		}
		j := i
		for j < len(line) && !blank(line[j]) {
			j++
		}
		if j > i && line[i:j] == word {
			return line[:i], line[j:], true
		}
		i = j
	}
	return line, "", false
}

// ShortBy makes s fit "by WHO": control characters become '?', invalid
// UTF-8 is replaced (the answers' JSON header would replace it, and the
// program that blessed would not recognise its own name), and a string
// longer than MaxBy keeps its head and its tail around "...". The same s
// always gives the same result.
func ShortBy(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) && r != ' ' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= MaxBy {
		return s
	}
	head, tail := MaxBy/4, MaxBy-MaxBy/4-3
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	cut := len(s) - tail
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return s[:head] + "..." + s[cut:]
}

func checkBy(by string) error {
	switch {
	case by == "":
		return errors.New("by takes who blessed")
	case len(by) > MaxBy:
		return fmt.Errorf("who blessed is longer than %d bytes", MaxBy)
	}
	for _, r := range by {
		if !unicode.IsPrint(r) && r != ' ' {
			return errors.New("who blessed holds a control character")
		}
	}
	return nil
}

// String is the command as it is written to ctl, without the newline.
func (c Command) String() string {
	switch c.Verb {
	case VerbCheckpoint:
		return "checkpoint"
	case VerbConsumerAdd:
		return "consumer add " + c.Name
	case VerbConsumerRemove:
		return "consumer rm " + c.Name
	case VerbTierAdd:
		return fmt.Sprintf("tier add %d %s", c.Tier, c.URL)
	case VerbTierRemove:
		return fmt.Sprintf("tier rm %d", c.Tier)
	case VerbNoRecall:
		return fmt.Sprintf("norecall %d", c.ID)
	}
	s := "bless"
	if c.ID != 0 {
		s += " " + strconv.FormatUint(c.ID, 10)
	}
	if c.Full {
		s += " full"
	}
	if c.By != "" {
		s += " by " + c.By
	}
	return s
}

// parseTier parses tier add ID URL and tier rm ID.
func parseTier(f []string, bad func(string) (Command, error)) (Command, error) {
	if len(f) < 3 || (f[1] != "add" && f[1] != "rm") || (f[1] == "add") != (len(f) == 4) || (f[1] == "rm" && len(f) != 3) {
		return bad("tier takes add ID URL or rm ID")
	}
	id, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || id == 0 {
		return bad("a tier id is a positive number")
	}
	if f[1] == "rm" {
		return Command{Verb: VerbTierRemove, Tier: uint32(id)}, nil
	}
	return Command{Verb: VerbTierAdd, Tier: uint32(id), URL: f[3]}, nil
}
