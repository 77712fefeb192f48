package posixdiff

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Identity is who runs a phase.
type Identity struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// Identities are the users that phases cycle through: root, nobody, and a
// user with a supplementary group (100) that root hands directories to.
var Identities = []Identity{
	{Name: "root", UID: 0, GID: 0},
	{Name: "nobody", UID: 65534, GID: 65534},
	{Name: "user", UID: 1000, GID: 1000, Groups: []uint32{1000, 100}},
}

// PhaseIdentity is the identity of phase p.
func PhaseIdentity(p int) Identity { return Identities[p%len(Identities)] }

// Run makes steps random calls beneath root for phase p of seed, and
// writes the transcript to w. It must run as the phase's identity.
func Run(root string, seed uint64, phase, steps int, w io.Writer) error {
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("posixdiff: %w", err)
	}
	defer unix.Close(rootfd)
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	// Each phase also has a name of its own, so that every identity
	// creates entries (names the earlier phases took are mostly there).
	r := &runner{rng: rand.New(rand.NewPCG(seed, uint64(phase))), rootfd: rootfd, w: bw,
		names: append(slices.Clone(names), fmt.Sprintf("p%d", phase))}
	for i := 0; i < steps; i++ {
		r.step(i)
	}
	fmt.Fprintln(bw, "tree:")
	dump(bw, rootfd)
	return nil
}

type runner struct {
	rng    *rand.Rand
	rootfd int
	w      io.Writer
	names  []string
}

// names are few, so that calls meet each other's results.
var (
	names    = []string{"a", "b", "c", "d"}
	longName = strings.Repeat("L", 255)
	deepComp = strings.Repeat("x", 250)
	modes    = []uint32{0, 0o644, 0o755, 0o600, 0o777, 0o4755, 0o2755, 0o2745, 0o6777, 0o1777, 0o2777, 0o4711, 0o2644, 0o0467}
	owners   = []int{-1, 0, 65534, 1000, 100}
	// Relative targets only: chmod and chown follow a symlink, and the
	// phases of root must never reach outside the test's directories.
	targets = []string{"a", "../b", "c/d", "nowhere", ".", longName}
)

// deepMax components of 251 bytes: 20 levels are about 5,000 bytes,
// past PATH_MAX.
const deepMax = 20

func (r *runner) pick(s []string) string { return s[r.rng.IntN(len(s))] }

// path is a random path: mostly short names up to three levels deep,
// sometimes a 255-byte name, sometimes a name deep in the deep chain.
func (r *runner) path() string {
	switch r.rng.IntN(10) {
	case 0:
		return r.deepPath(r.rng.IntN(deepMax)+1) + "/" + r.pick(r.names)
	case 1:
		return r.pick(r.names) + "/" + longName
	}
	var comps []string
	for d := r.rng.IntN(3) + 1; d > 0; d-- {
		comps = append(comps, r.pick(r.names))
	}
	return strings.Join(comps, "/")
}

func (r *runner) deepPath(depth int) string {
	comps := []string{"D"}
	for i := 0; i < depth; i++ {
		comps = append(comps, deepComp)
	}
	return strings.Join(comps, "/")
}

func (r *runner) mode() uint32 { return modes[r.rng.IntN(len(modes))] }

// step makes one call and writes its line, then the lines of the paths
// it touched.
func (r *runner) step(i int) {
	umask := []int{0, 0o22, 0o77}[r.rng.IntN(3)]
	unix.Umask(umask)
	ops := []func() (string, error, []string){
		r.open, r.open, r.open, r.write, r.write, r.mkdir, r.mknod, r.symlink, r.link,
		r.rename, r.unlink, r.rmdir, r.chmod, r.chmod, r.chown, r.truncate, r.truncate,
		r.utimens, r.setxattr, r.removexattr, r.mkdeep,
	}
	what, err, touched := ops[r.rng.IntN(len(ops))]()
	fmt.Fprintf(r.w, "%d umask=%03o %s: %s\n", i, umask, what, errName(err))
	for _, p := range touched {
		fmt.Fprintln(r.w, describe(r.rootfd, p))
	}
}

func (r *runner) open() (string, error, []string) {
	p := r.path()
	flags := []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR}[r.rng.IntN(3)]
	for _, f := range []int{unix.O_CREAT, unix.O_EXCL, unix.O_TRUNC, unix.O_APPEND} {
		if r.rng.IntN(2) == 0 {
			flags |= f
		}
	}
	mode := r.mode()
	n := r.rng.IntN(3) * 1000
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, mode)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if flags&unix.O_ACCMODE != unix.O_RDONLY && n > 0 {
			_, err = unix.Write(fd, make([]byte, n))
		}
		return err
	})
	return fmt.Sprintf("open %s flags=%#o mode=%04o write=%d", short(p), flags, mode, n), err, []string{p}
}

// write appends or overwrites through a new open, as an editor would.
func (r *runner) write() (string, error, []string) {
	p := r.path()
	n := r.rng.IntN(5000) + 1
	flags := unix.O_WRONLY
	if r.rng.IntN(2) == 0 {
		flags |= unix.O_APPEND
	}
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, make([]byte, n))
		return err
	})
	return fmt.Sprintf("write %s flags=%#o n=%d", short(p), flags, n), err, []string{p}
}

func (r *runner) mkdir() (string, error, []string) {
	p, mode := r.path(), r.mode()
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Mkdirat(dirfd, name, mode) })
	return fmt.Sprintf("mkdir %s mode=%04o", short(p), mode), err, []string{p}
}

func (r *runner) mknod() (string, error, []string) {
	p, mode := r.path(), r.mode()
	typ := []uint32{unix.S_IFIFO, unix.S_IFCHR, unix.S_IFSOCK, unix.S_IFREG}[r.rng.IntN(4)]
	dev := 0
	if typ == unix.S_IFCHR {
		dev = int(unix.Mkdev(1, 3))
	}
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Mknodat(dirfd, name, typ|mode, dev) })
	return fmt.Sprintf("mknod %s %s mode=%04o", short(p), typeName(typ), mode), err, []string{p}
}

func (r *runner) symlink() (string, error, []string) {
	p, target := r.path(), r.pick(targets)
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Symlinkat(target, dirfd, name) })
	return fmt.Sprintf("symlink %s -> %s", short(p), short(target)), err, []string{p}
}

// two runs fn on the (dirfd, name) pairs of two paths.
func (r *runner) two(p1, p2 string, fn func(d1 int, n1 string, d2 int, n2 string) error) error {
	return at(r.rootfd, p1, func(d1 int, n1 string) error {
		return at(r.rootfd, p2, func(d2 int, n2 string) error { return fn(d1, n1, d2, n2) })
	})
}

func (r *runner) link() (string, error, []string) {
	p1, p2 := r.path(), r.path()
	err := r.two(p1, p2, func(d1 int, n1 string, d2 int, n2 string) error { return unix.Linkat(d1, n1, d2, n2, 0) })
	return fmt.Sprintf("link %s %s", short(p1), short(p2)), err, []string{p1, p2}
}

func (r *runner) rename() (string, error, []string) {
	p1, p2 := r.path(), r.path()
	flags := []uint{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[r.rng.IntN(4)]
	err := r.two(p1, p2, func(d1 int, n1 string, d2 int, n2 string) error {
		return unix.Renameat2(d1, n1, d2, n2, flags)
	})
	return fmt.Sprintf("rename %s %s flags=%d", short(p1), short(p2), flags), err, []string{p1, p2}
}

func (r *runner) unlink() (string, error, []string) {
	p := r.path()
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, 0) })
	return "unlink " + short(p), err, []string{p}
}

func (r *runner) rmdir() (string, error, []string) {
	p := r.path()
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	return "rmdir " + short(p), err, []string{p}
}

func (r *runner) chmod() (string, error, []string) {
	p, mode := r.path(), r.mode()
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Fchmodat(dirfd, name, mode, 0) })
	return fmt.Sprintf("chmod %s %04o", short(p), mode), err, []string{p}
}

func (r *runner) chown() (string, error, []string) {
	p := r.path()
	uid, gid := owners[r.rng.IntN(len(owners))], owners[r.rng.IntN(len(owners))]
	if uid == -1 && gid == -1 {
		// A known difference (docs/usage.md): chown(-1, -1) clears
		// setuid and setgid on ext4, and changes nothing through the
		// mount.
		gid = 0
	}
	flags := []int{0, unix.AT_SYMLINK_NOFOLLOW}[r.rng.IntN(2)]
	err := at(r.rootfd, p, func(dirfd int, name string) error { return unix.Fchownat(dirfd, name, uid, gid, flags) })
	return fmt.Sprintf("chown %s %d:%d flags=%#x", short(p), uid, gid, flags), err, []string{p}
}

// truncate shortens or grows a file through an fd (ftruncate) or through
// an O_TRUNC open.
func (r *runner) truncate() (string, error, []string) {
	p := r.path()
	size := int64(r.rng.IntN(3000))
	viaOpen := r.rng.IntN(3) == 0
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		flags := unix.O_WRONLY | unix.O_NONBLOCK | unix.O_CLOEXEC
		if viaOpen {
			flags |= unix.O_TRUNC
		}
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if viaOpen {
			return nil
		}
		return unix.Ftruncate(fd, size)
	})
	return fmt.Sprintf("truncate %s size=%d open=%v", short(p), size, viaOpen), err, []string{p}
}

func (r *runner) utimens() (string, error, []string) {
	p := r.path()
	ts := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
	if r.rng.IntN(2) == 0 {
		ts = []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	}
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	return fmt.Sprintf("utimens %s now=%v", short(p), ts[0].Nsec == unix.UTIME_NOW), err, []string{p}
}

// fileCaps is a security.capability value (VFS_CAP_REVISION_2,
// cap_net_bind_service permitted), as setcap writes it: writes and
// chowns must remove it as ext4 does.
var fileCaps = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

func (r *runner) setxattr() (string, error, []string) {
	p, attr, val := r.path(), "user."+r.pick(names), r.pick(names)
	if r.rng.IntN(3) == 0 {
		attr, val = "security.capability", fileCaps
	}
	flags := []int{0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[r.rng.IntN(3)]
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		return unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name), attr, []byte(val), flags)
	})
	return fmt.Sprintf("setxattr %s %s=%q flags=%d", short(p), attr, val, flags), err, []string{p}
}

func (r *runner) removexattr() (string, error, []string) {
	p, attr := r.path(), "user."+r.pick(names)
	err := at(r.rootfd, p, func(dirfd int, name string) error {
		return unix.Lremovexattr(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name), attr)
	})
	return fmt.Sprintf("removexattr %s %s", short(p), attr), err, []string{p}
}

// mkdeep grows the deep chain to a random depth, one mkdirat per level
// from the level above.
func (r *runner) mkdeep() (string, error, []string) {
	depth := r.rng.IntN(deepMax) + 1
	var err error
	for d := 0; d <= depth && err == nil; d++ {
		p := r.deepPath(d)
		err = at(r.rootfd, p, func(dirfd int, name string) error { return unix.Mkdirat(dirfd, name, 0o777) })
		if err == unix.EEXIST {
			err = nil
		}
	}
	return fmt.Sprintf("mkdeep %d", depth), err, []string{r.deepPath(depth)}
}
