package e2e

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkip lists the posixtest entries that cannot pass on hsmfs by
// design, with the reason. Some entries skip themselves: Tmpfile (hsmfs
// refuses O_TMPFILE with EOPNOTSUPP, because such a file has no name to
// record until it is linked), RenameOpenDir (go-fuse issue 55) and
// XAttrLarge (ext4 under /tmp has no large xattrs).
var posixSkip = map[string]string{
	// The test takes a write lock with F_SETLK on one fd and expects a
	// second F_SETLK from the same process, on another fd, to fail with
	// EAGAIN. POSIX record locks belong to the process, so on a local
	// filesystem (ext4 included) the second lock succeeds; only go-fuse's
	// loopback with MountOptions.EnableLocks, which emulates them with
	// OFD locks on its backing fds, says EAGAIN. hsmfs does not enable
	// FUSE locks: the kernel keeps them, with standard POSIX semantics.
	"FcntlFlockLocksFile": "POSIX locks are kept by the kernel (per process), the test expects go-fuse's OFD emulation",
}

// TestPosix runs go-fuse's POSIX conformance tests against one hsmfs
// mount, each in a clean directory of its own.
func TestPosix(t *testing.T) {
	m := mount(t)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(m.Mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			fn(t, dir)
		})
	}
	// The mount must still answer after all that.
	query(t, m.Mnt)
}
