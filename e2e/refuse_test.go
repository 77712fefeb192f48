package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mustRefuse runs `hsmfs mount` with args, which must fail with exit 1,
// a one-line reason on stderr that contains every string of mention, and
// nothing mounted at mnt.
func mustRefuse(t *testing.T, mnt string, mention []string, args ...string) result {
	t.Helper()
	r := hsm(t, append([]string{"mount"}, args...)...)
	if r.code == 0 && isMounted(mnt) {
		forceUnmount(t, mnt, 0)
	}
	if r.code != 1 {
		t.Errorf("hsmfs mount %q: %v, want exit 1", args, r)
	}
	if isMounted(mnt) {
		t.Errorf("hsmfs mount %q was refused, but %s is mounted", args, mnt)
	}
	reason := strings.TrimSpace(r.stderr)
	if reason == "" || strings.Contains(reason, "\n") {
		t.Errorf("hsmfs mount %q: want a one-line reason on stderr, got %q", args, r.stderr)
	}
	for _, s := range mention {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("hsmfs mount %q: the reason %q does not mention %q", args, reason, s)
		}
	}
	return r
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestMountRefusals: hsmfs mount refuses what the contract lists, with a
// reason, exit 1, nothing mounted and nothing created.
func TestMountRefusals(t *testing.T) {
	t.Run("hsm-in-backing", func(t *testing.T) {
		for _, kind := range []string{"dir", "file"} {
			b, mn, j := newDirs(t)
			p := filepath.Join(b, ".hsm")
			if kind == "dir" {
				must(t, os.Mkdir(p, 0o755))
			} else {
				writeFile(t, p, "mine")
			}
			mustRefuse(t, mn, []string{".hsm"}, "--journal", j, b, mn)
			samePaths(t, "BACKING", listDir(t, b), []string{".hsm"})
		}
	})
	t.Run("journal-inside-backing", func(t *testing.T) {
		b, mn, _ := newDirs(t)
		mustRefuse(t, mn, []string{"journal"}, "--journal", filepath.Join(b, "j"), b, mn)
		mustRefuse(t, mn, []string{"journal"}, "--journal", filepath.Join(b, "sub", "j"), b, mn)
		mustRefuse(t, mn, []string{"journal"}, "--journal", b, b, mn)
		samePaths(t, "BACKING after the refusals", listDir(t, b), nil)
	})
	t.Run("journal-inside-backing-through-a-symlink", func(t *testing.T) {
		b, mn, j := newDirs(t)
		link := filepath.Join(filepath.Dir(j), "link")
		must(t, os.Symlink(b, link))
		mustRefuse(t, mn, []string{"journal"}, "--journal", filepath.Join(link, "j"), b, mn)
		samePaths(t, "BACKING after the refusal", listDir(t, b), nil)
	})
	t.Run("journal-inside-mountpoint", func(t *testing.T) {
		b, mn, _ := newDirs(t)
		mustRefuse(t, mn, []string{"journal"}, "--journal", filepath.Join(mn, "j"), b, mn)
		samePaths(t, "MOUNTPOINT after the refusal", listDir(t, mn), nil)
		samePaths(t, "BACKING after the refusal", listDir(t, b), nil)
	})
	t.Run("journal-in-use", func(t *testing.T) {
		m := mount(t)
		other := filepath.Join(t.TempDir(), "mnt2")
		must(t, os.Mkdir(other, 0o755))
		// (--log: the refused daemon must not write into the log
		// that says how the first one ends.)
		logf := filepath.Join(t.TempDir(), "refused.log")
		// The same BACKING: one tracker per directory comes first.
		mustRefuse(t, other, []string{"tracked already"}, "--log", logf, "--journal", m.Journal, m.Backing, other)
		// Another BACKING on the same journal.
		b2 := filepath.Join(t.TempDir(), "b2")
		must(t, os.Mkdir(b2, 0o755))
		mustRefuse(t, other, []string{"in use"}, "--log", logf, "--journal", m.Journal, b2, other)
		// The first mount keeps working.
		writeFile(t, filepath.Join(m.Mnt, "after"), "x")
		waitClosed(t, m.Mnt)
		if a := query(t, m.Mnt); !slices.Contains(a.Paths(), "after") {
			t.Errorf("the first mount, after the refused second one: query %q lacks \"after\"", a.Paths())
		}
	})
	t.Run("journal-of-another-backing", func(t *testing.T) {
		m := mount(t)
		writeFile(t, filepath.Join(m.Mnt, "recorded"), "x")
		m.unmount(t)
		b2, mn2, _ := newDirs(t)
		mustRefuse(t, mn2, []string{m.Backing}, "--journal", m.Journal, b2, mn2)
		samePaths(t, "the other BACKING", listDir(t, b2), nil)
		// The journal was not reset: its records are all there.
		m2 := mount(t, withBacking(m.Backing), withMnt(m.Mnt), withJournal(m.Journal))
		if a := query(t, m2.Mnt); !slices.Contains(a.Paths(), "recorded") {
			t.Errorf("after the refused mount, the journal lost its records: %q", a.Paths())
		}
	})
	t.Run("journal-damaged", func(t *testing.T) {
		m := mount(t)
		writeFile(t, filepath.Join(m.Mnt, "f"), "x")
		m.unmount(t)
		// Garbage over badger's manifest: the journal cannot be read.
		manifest := filepath.Join(m.Journal, "MANIFEST")
		must(t, os.WriteFile(manifest, []byte("this is not a badger manifest\n"), 0o600))
		before := snapshot(t, m.Journal, snapOpts{})
		logf := filepath.Join(t.TempDir(), "refused.log")
		mustRefuse(t, m.Mnt, nil, "--log", logf, "--journal", m.Journal, m.Backing, m.Mnt)
		after := snapshot(t, m.Journal, snapOpts{})
		delete(before, "hsmfs.lock") // holds the pid of the last one who tried
		delete(after, "hsmfs.lock")
		sameTree(t, "the damaged journal (never reset)", before, after, "before", "after")
	})
	t.Run("journal-not-a-directory", func(t *testing.T) {
		b, mn, j := newDirs(t)
		writeFile(t, j, "a file")
		mustRefuse(t, mn, nil, "--log", j+".log", "--journal", j, b, mn)
		if got := readFile(t, j); got != "a file" {
			t.Errorf("the file given as JOURNAL now holds %q", got)
		}
	})
	t.Run("backing-missing", func(t *testing.T) {
		b, mn, j := newDirs(t)
		mustRefuse(t, mn, []string{"BACKING"}, "--journal", j, filepath.Join(b, "nonexistent"), mn)
	})
	t.Run("backing-is-a-file", func(t *testing.T) {
		b, mn, j := newDirs(t)
		f := filepath.Join(b, "file")
		writeFile(t, f, "x")
		mustRefuse(t, mn, []string{"BACKING"}, "--journal", j, f, mn)
	})
}

// TestUsage: --help on every command and subcommand exits 0 with its
// usage, within 80 columns; bad flags and wrong argument counts exit 2
// with one line that says where the help is.
func TestUsage(t *testing.T) {
	commands := [][]string{{"mount"}, {"umount"}, {"changes"}, {"bless"}, {"checkpoint"}, {"status"},
		{"sync"}, {"export"}, {"consumer"}, {"consumer", "add"}, {"consumer", "rm"}, {"consumer", "list"},
		{"journal"}, {"journal", "check"}, {"journal", "dump"}, {"journal", "reset"}}
	for _, c := range commands {
		for _, h := range []string{"--help", "-h"} {
			r := hsm(t, append(c, h)...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage: hsmfs "+c[0]) || r.stderr != "" {
				t.Errorf("hsmfs %s %s: %v, want exit 0 and its usage on stdout", strings.Join(c, " "), h, r)
			}
			for _, line := range strings.Split(r.stdout, "\n") {
				if len(line) > 80 {
					t.Errorf("hsmfs %s %s: a line of %d columns: %q", strings.Join(c, " "), h, len(line), line)
				}
			}
		}
		if r := hsm(t, "help", c[0]); r.code != 0 || !strings.Contains(r.stdout, "Usage: hsmfs "+c[0]) {
			t.Errorf("hsmfs help %s: %v, want exit 0 and its usage", c[0], r)
		}
	}
	if r := hsm(t, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage") {
		t.Errorf("hsmfs --help: %v", r)
	}
	if r := hsm(t, "--version"); r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Errorf("hsmfs --version: %v", r)
	}
	dir := t.TempDir()
	bad := [][]string{
		{},
		{"frobnicate"},
		{"--bogus"},
		{"mount"},
		{"mount", dir},
		{"mount", dir, dir, dir},
		{"mount", "--bogus", dir, dir},
		{"mount", "--journal"},
		{"umount"},
		{"umount", dir, dir},
		{"umount", "--bogus", dir},
		{"changes"},
		{"changes", dir, dir},
		{"changes", "--json", "-0", dir},
		{"changes", "--xml", dir},
		{"bless"},
		{"bless", "1", "2", dir},
		{"bless", "abc", dir},
		{"bless", "--bogus", dir},
		{"checkpoint"},
		{"checkpoint", dir, dir},
		{"checkpoint", "--now", dir},
		{"status"},
		{"status", dir, dir},
		{"status", "--yaml", dir},
	}
	for _, args := range bad {
		r := hsm(t, args...)
		if r.code != 2 || !usageError(r) {
			t.Errorf("hsmfs %q: %v, want exit 2 and a usage error on stderr", args, r)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		t.Errorf("bad command lines mounted %q", left)
	}
}

// usageError: a bad command line is told in one line that says where the
// help is (or, with no arguments at all, the usage).
func usageError(r result) bool {
	if strings.Contains(r.stderr, "Usage:") {
		return true
	}
	return strings.Count(r.stderr, "\n") == 1 && strings.Contains(r.stderr, " --help'")
}
