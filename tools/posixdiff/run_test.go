package posixdiff

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunIsDeterministicAndCovers: the same seed makes the same
// transcript, and a root phase reaches what the differential test relies
// on: successful calls of every kind, setuid files, capabilities and a
// deep chain.
func TestRunIsDeterministicAndCovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sequence chowns and sets capabilities")
	}
	var out [2]bytes.Buffer
	for i := range out {
		// A directory of its own beneath a parent of its own: symlinks
		// to ../x reach the parent.
		dir := filepath.Join(t.TempDir(), "t")
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := Run(dir, 7, 0, 4000, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	if out[0].String() != out[1].String() {
		t.Fatal("two runs of seed 7 wrote different transcripts")
	}
	s := out[0].String()
	for _, want := range []string{"open", "write", "mkdir", "mknod", "symlink", "link", "rename", "unlink", "rmdir",
		"chmod", "chown", "truncate", "utimens", "setxattr", "removexattr", "mkdeep"} {
		if !strings.Contains(s, " "+want+" ") || !hasOK(s, want) {
			t.Errorf("no successful %s in 4000 steps", want)
		}
	}
	for _, want := range []string{"security.capability=", " 4755 ", "x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250/x*250"} {
		if !strings.Contains(s, want) {
			t.Errorf("the transcript never shows %q", want)
		}
	}
}

func hasOK(s, op string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, " "+op+" ") && strings.HasSuffix(l, ": ok") {
			return true
		}
	}
	return false
}
