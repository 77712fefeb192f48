package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInPlaceMount mounts a data directory over itself: applications keep
// their paths, every change through them is answered, a mirror kept with
// the contract's rsync stays exact, a process that held a file from
// before the mount is named in a warning, and umount gives the directory
// back with everything in it.
func TestInPlaceMount(t *testing.T) {
	b, _, j := newDirs(t)
	must(t, os.MkdirAll(filepath.Join(b, "d", "e"), 0o755))
	writeFile(t, filepath.Join(b, "a"), "a\n")
	writeFile(t, filepath.Join(b, "d", "e", "f"), "f\n")
	writeFile(t, filepath.Join(b, "held"+fmt.Sprint(os.Getpid())), "")
	held := openAppend(t, filepath.Join(b, "held"+fmt.Sprint(os.Getpid())))
	defer held.Close()
	dest := filepath.Join(t.TempDir(), "dest")
	if r := run(t, nil, "rsync", "-a", b+"/", dest+"/"); r.code != 0 {
		t.Fatalf("rsync -a: %v", r)
	}

	m := mount(t, withBacking(b), withMnt(b), withJournal(j))
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(m.Stderr, want) || !strings.Contains(m.Stderr, "fd ") {
		t.Errorf("hsmfs mount did not name this process, which holds %s open from before the mount: stderr %q", held.Name(), m.Stderr)
	}
	must(t, held.Close())
	if _, err := os.Stat(filepath.Join(b, ".hsm", "status")); err != nil {
		t.Fatalf("the directory's own path does not lead into the mount: %v", err)
	}
	reset(t, b)
	appendTo(t, filepath.Join(b, "a"), "more\n")
	must(t, os.Rename(filepath.Join(b, "d"), filepath.Join(b, "d2")))
	writeFile(t, filepath.Join(b, "d2", "e", "g"), "g\n")
	must(t, os.Remove(filepath.Join(b, "held"+fmt.Sprint(os.Getpid()))))
	waitClosed(t, b)
	list, r := consume(t, b, dest)
	rsyncOK(t, r, list)
	if !sameTree(t, "in place", snapshot(t, b, snapOpts{}), snapshot(t, dest, snapOpts{}), "DIR", "DEST") {
		t.Logf("the answer:\n  %s", strings.Join(list, "\n  "))
	}
	bless(t, b)
	mounted := snapshot(t, b, snapOpts{})
	m.unmount(t)
	if isMounted(b) {
		t.Fatalf("%s is still mounted after hsmfs umount", b)
	}
	sameTree(t, "after umount", mounted, snapshot(t, b, snapOpts{}), "mounted", "given back")
}

// TestInPlaceStrict: with --strict, a process holding a file beneath the
// directory from before is a refusal, and nothing stays mounted; with no
// such process the mount goes ahead.
func TestInPlaceStrict(t *testing.T) {
	b, _, j := newDirs(t)
	writeFile(t, filepath.Join(b, "held"), "")
	held := openAppend(t, filepath.Join(b, "held"))
	r := hsm(t, "mount", "--strict", "--journal", j, b, b)
	if r.code != 1 || !strings.Contains(r.stderr, "--strict") || !strings.Contains(r.stderr, fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("hsmfs mount --strict with a held file: %v, want exit 1 naming pid %d", r, os.Getpid())
	}
	if isMounted(b) {
		forceUnmount(t, b, 0)
		t.Fatalf("%s stayed mounted after the refusal", b)
	}
	must(t, held.Close())
	m := mount(t, withBacking(b), withMnt(b), withJournal(j), withArgs("--strict"))
	if m.Stderr != "" {
		t.Errorf("unexpected warning: %q", m.Stderr)
	}
}
