package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hsmfs/hsmfs/internal/manpage"
)

// manCommands is the order of the commands in hsmfs(1).
var manCommands = []string{"mount", "umount", "changes", "bless", "checkpoint", "status", "consumer", "sync", "export", "follow", "tier", "hsm", "journal"}

// writeManPage prints hsmfs(1) for `make install` (`hsmfs --man`): the
// synopsis and exit codes of --help, and every command's --help text as
// it is, so that the page and the help cannot disagree. The date comes
// from SOURCE_DATE_EPOCH when set, for reproducible builds.
func writeManPage(w io.Writer) int {
	summary, synopsis, rest := splitMainUsage(mainUsage)
	var subs []manpage.Section
	for _, name := range manCommands {
		subs = append(subs, manpage.Section{Title: "hsmfs " + name, Text: commands[name].usage})
	}
	var exit string
	for _, para := range rest {
		if strings.HasPrefix(para, "Exit codes:") {
			exit = para
		}
	}
	date := ""
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		date = time.Unix(s, 0).UTC().Format("2006-01-02")
	}
	err := manpage.Write(w, manpage.Page{
		Name: "hsmfs", Section: "1", Date: date, Source: "hsmfs " + versionString(), Manual: "User Commands",
		Summary: summary, Synopsis: synopsis,
		Sections: []manpage.Section{
			{Title: "COMMANDS", Subs: subs},
			{Title: "EXIT STATUS", Text: exit},
			{Title: "SEE ALSO", Text: "mount(8), fstab(5), mount.fuse3(8), systemd.service(5), systemd.mount(5);\n" +
				"docs/usage.md in the hsmfs sources: the full user guide."},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsmfs:", err)
		return exitError
	}
	return exitOK
}

// splitMainUsage takes mainUsage apart: its first line ("hsmfs: WHAT."),
// the lines under "Usage:", and the paragraphs after them.
func splitMainUsage(u string) (summary string, synopsis, rest []string) {
	paras := strings.Split(strings.TrimSpace(u), "\n\n")
	summary = strings.TrimSuffix(strings.TrimPrefix(paras[0], "hsmfs: "), ".")
	for _, para := range paras[1:] {
		if lines, ok := strings.CutPrefix(para, "Usage:\n"); ok {
			for _, l := range strings.Split(lines, "\n") {
				synopsis = append(synopsis, strings.TrimSpace(l))
			}
			continue
		}
		rest = append(rest, para)
	}
	return summary, synopsis, rest
}
