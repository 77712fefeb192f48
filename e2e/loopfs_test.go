package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loopFS is a filesystem on a loop-mounted image file, for tests that
// fill a disk or cut its power.
type loopFS struct {
	t      testing.TB
	img    string
	mp     string
	fstype string
}

// requireLoop makes sure loop devices work, and skips loudly (on stderr
// too, so that `go test` without -v shows it) if they do not.
func requireLoop(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/loop-control"); err == nil {
		if out, err := exec.Command("losetup", "-f").CombinedOutput(); err == nil && len(out) > 0 {
			return
		}
	}
	msg := fmt.Sprintf("LOOP DEVICES UNAVAILABLE: %s cannot run (needs root, /dev/loop-control and losetup)", t.Name())
	fmt.Fprintln(os.Stderr, "!!! "+msg)
	t.Skip(msg)
}

// newLoopFS makes an image of size bytes, formats it with fstype (xfs or
// ext4) and mounts it. Cleanup unmounts it.
func newLoopFS(t testing.TB, fstype string, size int64) *loopFS {
	t.Helper()
	requireLoop(t)
	dir := t.TempDir()
	l := &loopFS{t: t, img: filepath.Join(dir, fstype+".img"), mp: filepath.Join(dir, fstype), fstype: fstype}
	if err := os.Mkdir(l.mp, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(l.img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mkfs := []string{"mkfs.xfs", "-q", "-f", l.img}
	if fstype == "ext4" {
		mkfs = []string{"mkfs.ext4", "-q", "-F", l.img}
	}
	if out, err := exec.Command(mkfs[0], mkfs[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", mkfs, err, out)
	}
	l.mount()
	t.Cleanup(l.unmount)
	return l
}

func (l *loopFS) mount() {
	l.t.Helper()
	opts := "loop"
	if l.fstype == "xfs" {
		// A lazily unmounted earlier instance may still hold the UUID.
		opts += ",nouuid"
	}
	if out, err := exec.Command("mount", "-o", opts, l.img, l.mp).CombinedOutput(); err != nil {
		l.t.Fatalf("mount %s: %v: %s", l.img, err, out)
	}
	os.Chmod(l.mp, 0o755)
}

// unmount unmounts the filesystem, lazily if it stays busy.
func (l *loopFS) unmount() {
	if !isMounted(l.mp) {
		return
	}
	for i := 0; i < 50; i++ {
		if exec.Command("umount", l.mp).Run() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := exec.Command("umount", "-l", l.mp).CombinedOutput()
	if err != nil {
		l.t.Errorf("umount -l %s: %v: %s", l.mp, err, out)
	}
}

// shutdown cuts the power of an XFS filesystem: it stops all I/O at once
// without flushing the log, as fstests does to simulate a crash.
func (l *loopFS) shutdown() {
	l.t.Helper()
	if out, err := exec.Command("xfs_io", "-x", "-c", "shutdown", l.mp).CombinedOutput(); err != nil {
		l.t.Fatalf("xfs_io shutdown %s: %v: %s", l.mp, err, strings.TrimSpace(string(out)))
	}
}

// fill leaves about keep bytes free on the filesystem, with one big file.
func (l *loopFS) fill(keep int64) string {
	l.t.Helper()
	filler := filepath.Join(l.mp, "filler")
	out, err := exec.Command("df", "-B1", "--output=avail", l.mp).Output()
	if err != nil {
		l.t.Fatalf("df %s: %v", l.mp, err)
	}
	var avail int64
	fields := strings.Fields(string(out))
	fmt.Sscan(fields[len(fields)-1], &avail)
	size := avail - keep
	if size <= 0 {
		return filler
	}
	if o, err := exec.Command("fallocate", "-l", fmt.Sprint(size), filler).CombinedOutput(); err != nil {
		l.t.Fatalf("fallocate %s: %v: %s", filler, err, o)
	}
	return filler
}
