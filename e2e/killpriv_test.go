package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// fileCaps is a security.capability value (VFS_CAP_REVISION_2,
// cap_net_bind_service permitted), as setcap writes it.
var fileCaps = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// TestKillPrivileges: with HANDLE_KILLPRIV_V2 hsmfs clears setuid, setgid
// and file capabilities where ext4 would, with passthrough on and off. A
// write, a truncate and an O_TRUNC open by an unprivileged user clear
// them; root's write keeps setuid and setgid; a chown by root clears setuid and the
// capabilities. Every clearing is listed in the next answer.
func TestKillPrivileges(t *testing.T) {
	cases := []struct {
		name     string
		mode     uint32
		caps     bool
		as       string // "nobody" or "root"
		cmd      string // sh -c, in the directory; F is the file
		wantMode uint32
		wantCaps bool
	}{
		{"nobody-append", 0o6777, true, "nobody", "echo x >> F", 0o0777, false},
		{"nobody-overwrite", 0o4777, false, "nobody", "printf y | dd of=F conv=notrunc status=none", 0o0777, false},
		{"nobody-ftruncate", 0o6777, true, "nobody", "truncate -s 1 F", 0o0777, false},
		{"nobody-truncate-by-path", 0o6777, false, "nobody", "perl -e 'truncate(\"F\", 2) or die $!'", 0o0777, false},
		{"nobody-otrunc", 0o6777, true, "nobody", ": > F", 0o0777, false},
		{"nobody-setgid-no-group-exec", 0o2766, false, "nobody", "echo x >> F", 0o0766, false},
		// Root keeps setuid and setgid (CAP_FSETID) but, as on ext4, a write
		// by anyone removes the capabilities.
		{"root-append", 0o6777, true, "root", "echo x >> F", 0o6777, false},
		{"root-chown", 0o6755, true, "root", "chown 1:1 F", 0o0755, false},
	}
	for _, pt := range []bool{true, false} {
		t.Run(fmt.Sprintf("passthrough=%v", pt), func(t *testing.T) {
			var args []string
			if !pt {
				args = append(args, "--no-passthrough")
			}
			m := mount(t, withArgs(append(args, "-o", "allow_other,default_permissions")...))
			for _, c := range cases {
				p := filepath.Join(m.Mnt, c.name)
				must(t, os.WriteFile(p, []byte("content\n"), 0o600))
				must(t, unix.Chmod(p, c.mode))
				if c.caps {
					must(t, unix.Setxattr(p, "security.capability", fileCaps, 0))
				}
			}
			reset(t, m.Mnt)
			for _, c := range cases {
				cmd := bytes.ReplaceAll([]byte(c.cmd), []byte("F"), []byte(c.name))
				var cred = nobody
				if c.as == "root" {
					cred = nil
				}
				if r := run(t, cred, "sh", "-c", "cd "+m.Mnt+" && "+string(cmd)); r.code != 0 {
					t.Errorf("%s: %s as %s: %v", c.name, cmd, c.as, r)
					continue
				}
				b := filepath.Join(m.Backing, c.name)
				if got := lmode(t, b) & 0o7777; got != c.wantMode {
					t.Errorf("%s: BACKING mode %04o after %s as %s, want %04o", c.name, got, cmd, c.as, c.wantMode)
				}
				_, err := unix.Getxattr(b, "security.capability", nil)
				if hasCaps := err == nil; hasCaps != c.wantCaps {
					t.Errorf("%s: BACKING has security.capability %v (%v), want %v", c.name, hasCaps, err, c.wantCaps)
				}
				if got := lmode(t, filepath.Join(m.Mnt, c.name)) & 0o7777; got != c.wantMode {
					t.Errorf("%s: the mount shows mode %04o, want %04o", c.name, got, c.wantMode)
				}
			}
			waitClosed(t, m.Mnt)
			a := query(t, m.Mnt)
			for _, c := range cases {
				e := a.Get(c.name)
				if e == nil {
					t.Errorf("%s: not listed after %s", c.name, c.cmd)
					continue
				}
				if c.wantMode != c.mode && !slices.ContainsFunc(e.Ops, func(op string) bool {
					return op == "chmod" || op == "chown" || op == "truncate"
				}) {
					t.Errorf("%s: listed with ops %v: clearing the bits is a chmod, or part of a chown or truncate", c.name, e.Ops)
				}
			}
		})
	}
}

// TestInodeFlagsIoctls: lsattr works through the mount, chattr changes
// BACKING under an intent (listed as setxattr), and any other ioctl is
// refused with ENOTTY, for files and directories.
func TestInodeFlagsIoctls(t *testing.T) {
	m := mount(t)
	f, d := filepath.Join(m.Mnt, "f"), filepath.Join(m.Mnt, "d")
	writeFile(t, f, "x")
	must(t, os.Mkdir(d, 0o755))
	reset(t, m.Mnt)
	const noatime = 0x80 // FS_NOATIME_FL, which any owner may set
	for _, p := range []string{f, d} {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must(t, err)
		flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err != nil {
			t.Errorf("FS_IOC_GETFLAGS %s: %v", p, err)
		}
		if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|noatime)); err != nil {
			t.Errorf("FS_IOC_SETFLAGS %s: %v", p, err)
		}
		if _, err := unix.IoctlGetUint32(fd, 0x80087601); !errors.Is(err, unix.ENOTTY) { // FS_IOC_GETVERSION
			t.Errorf("FS_IOC_GETVERSION %s: %v, want ENOTTY", p, err)
		}
		unix.Close(fd)
		bfd, err := unix.Open(filepath.Join(m.Backing, filepath.Base(p)), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must(t, err)
		got, err := unix.IoctlGetUint32(bfd, unix.FS_IOC_GETFLAGS)
		unix.Close(bfd)
		if err != nil || got&noatime == 0 {
			t.Errorf("BACKING %s flags %#x (%v), want FS_NOATIME_FL set", filepath.Base(p), got, err)
		}
	}
	a := query(t, m.Mnt)
	for _, name := range []string{"f", "d"} {
		if e := a.Get(name); e == nil || !slices.Contains(e.Ops, "setxattr") {
			t.Errorf("after chattr, %s is listed as %+v, want setxattr among its ops", name, e)
		}
	}
}
