package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// helpArgs is every way to ask a command or subcommand for its help.
func helpArgs() [][]string {
	args := [][]string{{"--help"}, {"-h"}, {"help"}}
	for name := range commands {
		args = append(args, []string{name, "--help"}, []string{name, "-h"}, []string{"help", name})
	}
	for _, sub := range [][]string{{"consumer", "add"}, {"consumer", "rm"}, {"consumer", "list"},
		{"journal", "check"}, {"journal", "dump"}, {"journal", "reset"}} {
		args = append(args, append(sub, "--help"), append(sub, "-h"))
	}
	return append(args, []string{"consumer", "help"})
}

// Every command's help exits 0 and fits in 80 columns.
func TestHelp(t *testing.T) {
	for _, args := range helpArgs() {
		var out, errs bytes.Buffer
		if code := run(args, &out, &errs); code != exitOK || out.Len() == 0 || errs.Len() != 0 {
			t.Errorf("hsmfs %s: exit %d, stdout %d bytes, stderr %q", strings.Join(args, " "), code, out.Len(), errs.String())
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if len(line) > 80 {
				t.Errorf("hsmfs %s: a line of %d columns: %q", strings.Join(args, " "), len(line), line)
			}
		}
	}
}

// A usage error is one line that says where the help is, and names
// flags as the help does (--every, not -every).
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"sync", "--every", "soon", "a", "b"},
		{"sync", "-every", "soon", "a", "b"},
		{"changes", "--nope", "m"},
		{"bless", "x", "m"},
		{"consumer", "frob"},
		{"consumer", "add", "m"},
		{"journal", "check"},
		{"status"},
	} {
		var out, errs bytes.Buffer
		code := run(args, &out, &errs)
		msg := errs.String()
		if code != exitUsage || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "see 'hsmfs "+args[0]+" --help'") {
			t.Errorf("hsmfs %s: exit %d, stderr %q; want exit 2 and one line naming the help", strings.Join(args, " "), code, msg)
		}
		if regexp.MustCompile(`(^|[ :])-[a-z][a-z-]+`).MatchString(msg) {
			t.Errorf("hsmfs %s: %q names a long flag with one dash", strings.Join(args, " "), msg)
		}
	}
	var out, errs bytes.Buffer
	if code := run([]string{"frob"}, &out, &errs); code != exitUsage || strings.Count(errs.String(), "\n") != 1 {
		t.Errorf("hsmfs frob: exit %d, stderr %q", code, errs.String())
	}
}

// hsmfs(1) has a section for every command.
func TestManPageHasEveryCommand(t *testing.T) {
	var b bytes.Buffer
	if code := writeManPage(&b); code != exitOK {
		t.Fatalf("--man: exit %d", code)
	}
	for name := range commands {
		if name == "unmount" { // umount's other spelling
			continue
		}
		if !strings.Contains(b.String(), `.SS "hsmfs `+name+`"`) {
			t.Errorf("hsmfs(1) has no section for %s", name)
		}
	}
}

// hsmfs status speaks words, aligned, with ages: no Go syntax.
func TestStatusText(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	st := &hsmctl.Status{Pid: 42, Backing: "/data", Mountpoint: "/mnt", Journal: "/j", Mounted: now.Unix() - 200,
		CurrentPeriod: 9, LastQuery: 8, LastBlessed: 7, PendingPaths: 1, InFlight: 2, OpenForWrite: 1,
		JournalFree: 3 << 30, JournalReserve: 64 << 20, JournalLow: true, OutsideCheck: "ran", OutsideFound: 3,
		Consumers: []hsmctl.ConsumerStatus{
			{Name: "default", LastQuery: 8, LastBlessed: 7, LastQueryTime: now.Unix() - 180, LastBlessTime: now.Unix() - 7200,
				BlessedBy: "sync ab12 /mirror", PendingPaths: 1, OldestUnblessed: 90},
			{Name: "backup", Full: true, Lagging: true},
		}}
	var b bytes.Buffer
	writeStatus(&b, st, now)
	out := b.String()
	for _, bad := range []string{"map[", "{", "}", "&", "[]", "%!"} {
		if strings.Contains(out, bad) {
			t.Errorf("status holds %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{"mounted 3m20s ago", "3.0 GiB free", "below its reserve", "1 path\n", "2 modifications",
		"8 (3m ago)", "7 (2h ago)", "1m30s", "full,lagging", "sync ab12 /mirror", "ran, 3 paths found"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("a line ends in spaces: %q", line)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 42 * time.Second: "42s", 3 * time.Minute: "3m", 192 * time.Second: "3m12s",
		2*time.Hour + 5*time.Minute: "2h5m", 2 * time.Hour: "2h", 76 * time.Hour: "3d4h", 72 * time.Hour: "3d",
		10 * time.Minute: "10m", 20 * time.Hour: "20h",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
