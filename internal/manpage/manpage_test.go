package manpage

import (
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	var b strings.Builder
	err := Write(&b, Page{Name: "tool", Section: "1", Date: "2026", Source: "tool 1.0", Manual: "User Commands",
		Summary: "does things", Synopsis: []string{"tool run [-f] X", "tool --help"},
		Sections: []Section{{Title: "COMMANDS", Subs: []Section{{Title: "tool run", Text: "Usage: tool run\n\n.hidden starts a line\n  a\\b --flag\n"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		".TH \"TOOL\" \"1\" \"2026\" \"tool 1.0\" \"User Commands\"\n",
		"tool \\- does things\n",
		"tool run [\\-f] X\n.br\ntool \\-\\-help\n",
		".SS \"tool run\"\n.nf\nUsage: tool run\n\n\\&.hidden starts a line\n  a\\eb \\-\\-flag\n.fi\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
}
