// Command hsmfs mounts a tracked view of a directory and talks to a
// running mount. See docs/usage.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
)

// Exit codes (documented in docs/usage.md and in --help).
const (
	exitOK    = 0 // success
	exitError = 1 // the command failed; the reason is on stderr
	exitUsage = 2 // bad command line
)

var version = "" // set with -ldflags "-X main.version=..."

const mainUsage = `hsmfs: a change tracker for backup, sync and HSM tools.

Usage:
  hsmfs mount [options] BACKING MOUNTPOINT
  hsmfs BACKING MOUNTPOINT -o OPTIONS   (mount(8), fstab type fuse.hsmfs)
  hsmfs umount MOUNTPOINT
  hsmfs changes [--consumer NAME] [--json | -0] MOUNTPOINT
  hsmfs bless [--consumer NAME] [--full] [--by WHO] [ID] MOUNTPOINT
  hsmfs consumer add|rm MOUNTPOINT NAME | list [--json] MOUNTPOINT
  hsmfs checkpoint MOUNTPOINT
  hsmfs status [--json] MOUNTPOINT
  hsmfs sync [options] MOUNTPOINT DEST [-- RSYNC_ARGS...]
  hsmfs export [options] --nats URL --stream NAME MOUNTPOINT
  hsmfs follow [options] --nats URL --stream NAME --durable NAME SOURCE DEST
  hsmfs tier add|rm MOUNTPOINT ID [URL] | list [--json] MOUNTPOINT
  hsmfs hsm archive|release|restore|remove|state|set|clear PATH...
  hsmfs journal check|dump|reset JOURNAL
  hsmfs help COMMAND | --help | --version

Run "hsmfs COMMAND --help" (or "hsmfs help COMMAND") for a command's
options; docs/usage.md is the full guide.

Exit codes: 0 success, 1 failure (reason on stderr), 2 bad command line.
`

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

type command struct {
	run   func(args []string) error
	usage string
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"mount":      {runMount, mountUsage},
		"umount":     {runUmount, umountUsage},
		"unmount":    {runUmount, umountUsage},
		"changes":    {runChanges, changesUsage},
		"bless":      {runBless, blessUsage},
		"checkpoint": {runCheckpoint, checkpointUsage},
		"status":     {runStatus, statusUsage},
		"sync":       {runSync, syncUsage},
		"journal":    {runJournal, journalUsage},
		"consumer":   {runConsumer, consumerUsage},
		"export":     {runExport, exportUsage},
		"follow":     {runFollow, followUsage},
		"tier":       {runTier, tierUsage},
		"hsm":        {runHSM, hsmUsage + "\n" + hsmRunUsage},
	}
}

func main() {
	if os.Getenv(daemonEnv) != "" {
		os.Exit(runDaemon())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	case "help":
		return help(args[1:], stdout, stderr)
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, "hsmfs", versionString())
		return exitOK
	case "--man": // for make install: hsmfs(1) from the usage texts (manpage.go)
		return writeManPage(stdout)
	}
	if helperForm(args) { // options.go: as mount(8) runs us, through mount.fuse3
		args = append([]string{"mount"}, args...)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "hsmfs: unknown command %q; see 'hsmfs --help'\n", args[0])
		return exitUsage
	}
	err := cmd.run(args[1:])
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, cmd.usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "hsmfs %s: %s; see 'hsmfs %s --help'\n", args[0], ue.msg, args[0])
		return exitUsage
	default:
		fmt.Fprintf(stderr, "hsmfs %s: %v\n", args[0], err)
		return exitError
	}
}

// help is "hsmfs help [COMMAND]".
func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok || len(args) > 1 {
		fmt.Fprintf(stderr, "hsmfs help: no command %q; see 'hsmfs --help'\n", strings.Join(args, " "))
		return exitUsage
	}
	fmt.Fprint(stdout, cmd.usage)
	return exitOK
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, as users of mount(8) expect.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{dashes(err.Error())}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagName is a flag as the flag package's errors name it: "-every".
var flagName = regexp.MustCompile(`(^|[ :])-([A-Za-z][A-Za-z0-9-]+)`)

// dashes spells a flag of more than one letter in an error of the flag
// package as the help does: --every, not -every.
func dashes(msg string) string {
	return flagName.ReplaceAllString(msg, "$1--$2")
}

// multiFlag collects a flag that may be repeated (-o a -o b).
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
