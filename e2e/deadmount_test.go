package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// killDaemon SIGKILLs the daemon of m and waits until the mount answers
// ENOTCONN, as after an OOM kill or a panic.
func killDaemon(t *testing.T, m *hsmMount) {
	t.Helper()
	m.unmounted = true // its cleanup must not try a clean unmount
	must(t, syscall.Kill(m.Pid, syscall.SIGKILL))
	waitDead(t, m.Pid)
	t.Cleanup(func() { forceUnmount(t, m.Mnt, 0) }) // if the test fails before clearing it
	var st syscall.Statfs_t
	// ECONNABORTED when the kill aborted a request in flight (the
	// mountinfo package counts both as dead).
	if err := syscall.Statfs(m.Mnt, &st); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("statfs of the dead mount: %v, want ENOTCONN or ECONNABORTED", err)
	}
}

// mountsAt counts the entries of the mount table at exactly path.
func mountsAt(path string) int {
	n := 0
	for _, m := range mounts() {
		if m == path {
			n++
		}
	}
	return n
}

// TestDeadMount: after the daemon is killed, `hsmfs mount` on the same
// MOUNTPOINT clears the dead mount and mounts (a recovery), and `hsmfs
// umount` of a dead mount clears it and exits 0, also while a process
// still has its working directory in it.
func TestDeadMount(t *testing.T) {
	t.Run("mount-again", func(t *testing.T) {
		m := mount(t)
		writeFile(t, filepath.Join(m.Mnt, "before"), "x")
		waitClosed(t, m.Mnt)
		killDaemon(t, m)
		m2 := mount(t, withBacking(m.Backing), withMnt(m.Mnt), withJournal(m.Journal))
		if n := mountsAt(m.Mnt); n != 1 {
			t.Errorf("%d mounts at %s after the new mount, want 1 (the dead one cleared)", n, m.Mnt)
		}
		if st := status(t, m2.Mnt); st["recovered"] != true {
			t.Errorf("mount after the kill: status %v, want recovered true", st)
		}
		// "." too: the check at mount lists the root, whose ctime the
		// crashed run changed after its index (D4 allows it after a crash).
		samePaths(t, "changes after the kill", plain(t, m2.Mnt), []string{".", "before"})
	})
	t.Run("umount", func(t *testing.T) {
		m := mount(t)
		// A process whose working directory is in the mount keeps it
		// busy: only a lazy unmount can clear it.
		sleeper := exec.Command("sleep", "600")
		sleeper.Dir = m.Mnt
		must(t, sleeper.Start())
		t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
		killDaemon(t, m)
		r := hsm(t, "umount", m.Mnt)
		if r.code != 0 || !strings.Contains(r.stderr, "cleared a dead hsmfs mount") {
			t.Errorf("hsmfs umount of a dead mount: %v, want exit 0 saying it cleared it", r)
		}
		if isMounted(m.Mnt) {
			t.Errorf("%s is still mounted after hsmfs umount of the dead mount", m.Mnt)
		}
		if r := hsm(t, "umount", m.Mnt); r.code != 1 || !strings.Contains(r.stderr, "not mounted") {
			t.Errorf("hsmfs umount of a directory with nothing mounted: %v, want exit 1, not mounted", r)
		}
	})
}

// TestNeverClearOthers: a live mount at MOUNTPOINT, of another
// filesystem or of hsmfs, is never cleared: `hsmfs mount` refuses with
// "already mounted", `hsmfs umount` refuses another filesystem, and the
// mount stays.
func TestNeverClearOthers(t *testing.T) {
	t.Run("tmpfs", func(t *testing.T) {
		b, mn, j := newDirs(t)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "hsmfs-test", mn).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", mn).CombinedOutput(); err != nil {
				t.Errorf("umount tmpfs: %v: %s", err, out)
			}
		})
		writeFile(t, filepath.Join(mn, "mine"), "tmpfs")
		r := hsm(t, "mount", "--journal", j, b, mn)
		if r.code != 1 || !strings.Contains(r.stderr, "already mounted") || !strings.Contains(r.stderr, "tmpfs") {
			t.Errorf("hsmfs mount over a tmpfs: %v, want exit 1, already mounted (tmpfs)", r)
		}
		r = hsm(t, "umount", mn)
		if r.code != 1 || !strings.Contains(r.stderr, "not an hsmfs mount") {
			t.Errorf("hsmfs umount of a tmpfs: %v, want exit 1, not an hsmfs mount", r)
		}
		if n := mountsAt(mn); n != 1 {
			t.Fatalf("%d mounts at %s, want the tmpfs alone", n, mn)
		}
		if data, err := os.ReadFile(filepath.Join(mn, "mine")); err != nil || string(data) != "tmpfs" {
			t.Errorf("the tmpfs lost its file: %q, %v", data, err)
		}
	})
	t.Run("live-hsmfs", func(t *testing.T) {
		m := mount(t)
		b2, _, j2 := newDirs(t)
		r := hsm(t, "mount", "--journal", j2, b2, m.Mnt)
		if r.code != 1 || !strings.Contains(r.stderr, "already mounted") {
			t.Errorf("hsmfs mount over a live hsmfs: %v, want exit 1, already mounted", r)
		}
		if n := mountsAt(m.Mnt); n != 1 {
			t.Errorf("%d mounts at %s, want the first hsmfs alone", n, m.Mnt)
		}
		if pid := int(num(t, status(t, m.Mnt), "pid")); pid != m.Pid {
			t.Errorf("status pid %d, want the first daemon %d", pid, m.Pid)
		}
	})
}
