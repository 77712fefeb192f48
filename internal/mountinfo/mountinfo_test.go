package mountinfo

import (
	"os"
	"path/filepath"
	"testing"

	mi "github.com/moby/sys/mountinfo"
)

func TestAt(t *testing.T) {
	m, err := At("/")
	if err != nil || m == nil {
		t.Fatalf("At(/) = %v, %v; want the root mount", m, err)
	}
	if m.State != Other || m.FSType == "" {
		t.Errorf("At(/) = %+v, want a mount of another type", m)
	}
	dir := t.TempDir()
	if m, err := At(dir); err != nil || m != nil {
		t.Errorf("At(%s) = %+v, %v; want nothing mounted", dir, m, err)
	}
	if err := ClearDead(dir); err == nil {
		t.Errorf("ClearDead of a plain directory succeeded")
	}
	if err := ClearDead("/"); err == nil {
		t.Errorf("ClearDead(/) succeeded")
	}
}

func TestResolve(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		filepath.Join(dir, "link"):         filepath.Join(dir, "real"),
		filepath.Join(dir, "up", "real"):   filepath.Join(dir, "real"),
		filepath.Join(dir, "up", "absent"): filepath.Join(dir, "absent"), // as for a dead mount
	}
	for in, want := range cases {
		if got, err := Resolve(in); err != nil || got != want {
			t.Errorf("Resolve(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestTopmost(t *testing.T) {
	// A tmpfs (id 5) under an hsmfs mount (id 9) on the same path; the
	// mount table need not list them in that order.
	lower := &mi.Info{ID: 5, Parent: 1, Mountpoint: "/m", FSType: "tmpfs"}
	upper := &mi.Info{ID: 9, Parent: 5, Mountpoint: "/m", FSType: FSType}
	for _, infos := range [][]*mi.Info{{lower, upper}, {upper, lower}} {
		if got := topmost(infos); got != upper {
			t.Errorf("topmost = %+v, want the upper mount", got)
		}
	}
	if topmost(nil) != nil {
		t.Errorf("topmost of nothing is not nil")
	}
}
