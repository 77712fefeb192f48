package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCrashPower is power mode: BACKING and JOURNAL are on two
// loop-mounted XFS filesystems, and a crash shuts both down without a log
// flush (xfs_io -x -c shutdown), which loses everything not yet on disk,
// as a power cut would. Then both are mounted again (log recovery) and so
// is hsmfs. The consumer's copy lives on the machine's own disk.
func TestCrashPower(t *testing.T) { testCrashPower(t, false) }

// TestCrashPowerInPlace is power mode with the mount over BACKING itself.
func TestCrashPowerInPlace(t *testing.T) { testCrashPower(t, true) }

func testCrashPower(t *testing.T, inPlace bool) {
	n := crashCount(t, "HSMFS_POWERCUTS", 3, 30)
	bfs := newLoopFS(t, "xfs", 320<<20)
	jfs := newLoopFS(t, "xfs", 320<<20)
	backing := filepath.Join(bfs.mp, "backing")
	journal := filepath.Join(jfs.mp, "journal")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mode := "power"
	if inPlace {
		mnt, mode = backing, "power in place"
	}
	logf := filepath.Join(t.TempDir(), "hsmfs.log")
	r := newCrashRig(t, backing, mnt, journal)
	r.mountFn = func() *hsmMount {
		args := []string{"--log", logf}
		if os.Getenv("HSMFS_FINE") != "" {
			args = append(args, "--fine-intents")
		}
		return mount(t, withBacking(backing), withMnt(mnt), withJournal(journal), withArgs(args...))
	}
	seed := crashSeed(t)
	cut := 0
	r.run(mode, n, seed, func() {
		cut++
		r.m.unmounted = true
		// The power goes: both disks stop at once, in either order.
		if cut%2 == 0 {
			bfs.shutdown()
			jfs.shutdown()
		} else {
			jfs.shutdown()
			bfs.shutdown()
		}
		syscall.Kill(r.m.Pid, syscall.SIGKILL)
		r.remount(func() {
			bfs.unmount()
			jfs.unmount()
			bfs.mount()
			jfs.mount()
		})
	})
}
