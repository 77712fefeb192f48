package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// permMount is a mount as the POSIX suites run it: other users in, the
// kernel checking their access by the modes it is shown.
func permMount(t *testing.T, opts ...mountOpt) *hsmMount {
	t.Helper()
	return mount(t, append(opts, withArgs("-o", "allow_other,default_permissions"))...)
}

func lmode(t *testing.T, p string) uint32 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return st.Mode
}

// TestModesShowAsBackingHolds: every permission bit, setuid, setgid and
// sticky, on every kind of entry, on create and after chmod, shows
// through the mount exactly as BACKING holds it (go-fuse would show 0000
// as 0644, and setuid was lost on create).
func TestModesShowAsBackingHolds(t *testing.T) {
	m := permMount(t)
	old := unix.Umask(0)
	defer unix.Umask(old)
	kinds := []struct {
		name string
		typ  uint32
		mk   func(p string, mode uint32) error
	}{
		{"file", unix.S_IFREG, func(p string, mode uint32) error {
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"dir", unix.S_IFDIR, func(p string, mode uint32) error { return unix.Mkdir(p, mode) }},
		{"fifo", unix.S_IFIFO, func(p string, mode uint32) error { return unix.Mkfifo(p, mode) }},
		{"socket", unix.S_IFSOCK, func(p string, mode uint32) error { return unix.Mknod(p, unix.S_IFSOCK|mode, 0) }},
		{"chardev", unix.S_IFCHR, func(p string, mode uint32) error { return unix.Mknod(p, unix.S_IFCHR|mode, int(unix.Mkdev(1, 3))) }},
	}
	modes := []uint32{0, 0o7777, 0o4711, 0o2755, 0o1777, 0o2745, 0o644, 0o1, 0o4000}
	for _, k := range kinds {
		for _, mode := range modes {
			name := fmt.Sprintf("%s-%o", k.name, mode)
			p, b := filepath.Join(m.Mnt, name), filepath.Join(m.Backing, name)
			must(t, k.mk(p, mode))
			want := k.typ | mode
			if k.typ == unix.S_IFDIR {
				want = k.typ | mode&0o1777 // mkdir takes no setuid or setgid (ext4 alike)
			}
			if got, back := lmode(t, p), lmode(t, b); got != want || back != want {
				t.Errorf("%s made with %s: mount shows %s, BACKING holds %s, want %s", k.name, octal(mode), octal(got), octal(back), octal(want))
			}
			for _, cm := range modes {
				must(t, unix.Chmod(p, cm))
				if got, back := lmode(t, p), lmode(t, b); got != k.typ|cm || back != k.typ|cm {
					t.Errorf("%s after chmod %s: mount shows %s, BACKING holds %s", k.name, octal(cm), octal(got), octal(back))
				}
			}
		}
	}
}

func octal(m uint32) string { return fmt.Sprintf("0%o", m) }

// TestOtherUsersMeetBackingModes: access as another user is decided by
// the mode that BACKING holds, mode 0000 included.
func TestOtherUsersMeetBackingModes(t *testing.T) {
	m := permMount(t)
	old := unix.Umask(0)
	defer unix.Umask(old)
	for name, mode := range map[string]uint32{"f0000": 0, "f0600": 0o600, "f0644": 0o644} {
		must(t, os.WriteFile(filepath.Join(m.Mnt, name), []byte("secret\n"), 0o600))
		must(t, os.Chmod(filepath.Join(m.Mnt, name), os.FileMode(mode)))
	}
	must(t, unix.Mkdir(filepath.Join(m.Mnt, "d0000"), 0))
	must(t, unix.Mkdir(filepath.Join(m.Mnt, "d0700"), 0o700))
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"cat", "f0000"}, false},
		{[]string{"cat", "f0600"}, false},
		{[]string{"cat", "f0644"}, true},
		{[]string{"ls", "d0000"}, false},
		{[]string{"ls", "d0700"}, false},
		{[]string{"touch", "d0700/new"}, false},
		{[]string{"sh", "-c", "echo x >> f0644"}, false},
	} {
		args := append([]string(nil), c.args...)
		for i := 1; i < len(args); i++ {
			if !strings.Contains(args[i], " ") {
				args[i] = filepath.Join(m.Mnt, args[i])
			} else {
				args[i] = "cd " + m.Mnt + " && " + args[i]
			}
		}
		r := run(t, nobody, args[0], args[1:]...)
		if (r.code == 0) != c.ok {
			t.Errorf("nobody: %s: %v, want success %v", strings.Join(c.args, " "), r, c.ok)
		}
	}
	if _, err := os.Stat(filepath.Join(m.Backing, "d0700", "new")); err == nil {
		t.Errorf("nobody created d0700/new in BACKING through a mode-0700 directory of root")
	}
}

// TestCreateKeepsSetuidAndGroup: a new entry is the caller's, with the
// mode the kernel asked for (setuid survives the change of owner) and the
// group of a setgid directory (and its setgid bit for a new directory).
func TestCreateKeepsSetuidAndGroup(t *testing.T) {
	m := permMount(t)
	old := unix.Umask(0)
	defer unix.Umask(old)
	fd, err := unix.Open(filepath.Join(m.Mnt, "su"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o4711)
	must(t, err)
	unix.Close(fd)
	if got := lmode(t, filepath.Join(m.Backing, "su")); got != unix.S_IFREG|0o4711 {
		t.Errorf("open(O_CREAT, 04711) as root: BACKING holds %s, want 0104711", octal(got))
	}
	sg := filepath.Join(m.Mnt, "sg")
	must(t, os.Mkdir(sg, 0o777))
	must(t, os.Chown(sg, 0, 100))
	must(t, unix.Chmod(sg, 0o2777))
	r := run(t, nobody, "sh", "-c", "umask 0 && touch "+sg+"/f && mkdir "+sg+"/d && mkdir "+m.Mnt+"/sg/d/e")
	if r.code != 0 {
		t.Fatalf("nobody: create in a setgid directory: %v", r)
	}
	for _, c := range []struct {
		name string
		mode uint32
	}{{"sg/f", unix.S_IFREG | 0o666}, {"sg/d", unix.S_IFDIR | 0o2777}, {"sg/d/e", unix.S_IFDIR | 0o2777}} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(m.Backing, c.name), &st))
		if st.Uid != 65534 || st.Gid != 100 || st.Mode != c.mode {
			t.Errorf("%s made by nobody in a setgid directory of group 100: BACKING has uid %d gid %d mode %s, want 65534 100 %s",
				c.name, st.Uid, st.Gid, octal(st.Mode), octal(c.mode))
		}
	}
}
