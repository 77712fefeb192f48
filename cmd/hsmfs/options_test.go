package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hsmfs/hsmfs/internal/lifecycle"
)

// TestApplyOptions: every hsmfs flag has its -o spelling, fstab words are
// dropped, the rest goes to FUSE in order, and a misspelt hsmfs option is
// a usage error instead of reaching FUSE or vanishing.
func TestApplyOptions(t *testing.T) {
	var a mountArgs
	var fg bool
	err := applyOptions(&a, &fg, []string{
		"rw,journal=/j,log=/l.log,allow_other,nofail,_netdev,x-systemd.requires=x.mount,debug",
		"no_passthrough,fine_intents,foreground,defaults,noauto,comment=x,max_read=4096,dev,suid",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := mountArgs{lifecycle.Config{Journal: "/j", Log: "/l.log", Debug: true, NoPassthru: true, FineOnly: true,
		Options: []string{"rw", "allow_other", "max_read=4096", "dev", "suid"}}}
	if a.Journal != want.Journal || a.Log != want.Log || !a.Debug || !a.NoPassthru || !a.FineOnly || !fg ||
		!slices.Equal(a.Options, want.Options) {
		t.Errorf("got %+v foreground=%v, want %+v foreground=true", a, fg, want)
	}
	for _, o := range hsmfsOptions {
		if lookupOption(o.name) == nil {
			t.Errorf("option %s not found", o.name)
		}
	}

	bad := []string{
		"journal", "journal=", "log", "debug=1", "foreground=yes",
		"no-passthrough", "fine-intents", "Journal=/j", "jornal=/j", "journl=/j", "forground", "debgu",
	}
	for _, o := range bad {
		var a mountArgs
		var fg bool
		var ue usageError
		if err := applyOptions(&a, &fg, []string{o}); !errors.As(err, &ue) {
			t.Errorf("-o %s: %v, want a usage error", o, err)
		}
	}
	// FUSE's own, unknown to hsmfs, go on untouched (FUSE decides).
	for _, o := range []string{"ro", "rw", "lo", "dev", "bogus", "default_permissions", "fsname=x"} {
		var a mountArgs
		var fg bool
		if err := applyOptions(&a, &fg, []string{o}); err != nil || !slices.Equal(a.Options, []string{o}) {
			t.Errorf("-o %s: %v, options %q; want it passed to FUSE", o, err, a.Options)
		}
	}
	// --journal and -o journal= must agree.
	a = mountArgs{lifecycle.Config{Journal: "/a"}}
	if err := applyOptions(&a, &fg, []string{"journal=/b"}); err == nil {
		t.Errorf("--journal /a -o journal=/b: accepted")
	}
	a = mountArgs{lifecycle.Config{Journal: "/a"}}
	if err := applyOptions(&a, &fg, []string{"journal=/a"}); err != nil {
		t.Errorf("--journal /a -o journal=/a: %v", err)
	}
}

// TestHelperForm: "hsmfs BACKING MOUNTPOINT -o ..." is a mount; a command,
// a flag or a word that is no path is not.
func TestHelperForm(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "data"), 0o755))
	wd, _ := os.Getwd()
	must(os.Chdir(dir))
	defer os.Chdir(wd)
	cases := []struct {
		args []string
		want bool
	}{
		{[]string{"/srv/data", "/data", "-o", "journal=/j"}, true},
		{[]string{"/srv/data", "/data"}, true},
		{[]string{"data", "mnt"}, true},
		{[]string{"./nothere", "mnt"}, true},
		{[]string{"nothere", "mnt"}, false},
		{[]string{"status", "/data"}, false},
		{[]string{"mount", "/a", "/b"}, false},
		{[]string{"/a"}, false},
		{[]string{"--help", "/a"}, false},
		{[]string{"/a", "-o", "x"}, false},
	}
	for _, c := range cases {
		if got := helperForm(c.args); got != c.want {
			t.Errorf("helperForm(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
