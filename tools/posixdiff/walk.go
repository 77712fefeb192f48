package posixdiff

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// dirOpenFlags opens a directory on the way down, never through a
// symlink.
const dirOpenFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// resolve opens the directory that holds rel (relative to rootfd) by one
// openat per component and returns it with the final name. The caller
// closes dirfd unless it is rootfd.
func resolve(rootfd int, rel string) (dirfd int, name string, err error) {
	comps := strings.Split(rel, "/")
	dirfd = rootfd
	for _, c := range comps[:len(comps)-1] {
		fd, err := unix.Openat(dirfd, c, dirOpenFlags, 0)
		closeDir(rootfd, dirfd)
		if err != nil {
			return -1, "", err
		}
		dirfd = fd
	}
	return dirfd, comps[len(comps)-1], nil
}

func closeDir(rootfd, fd int) {
	if fd != rootfd && fd >= 0 {
		unix.Close(fd)
	}
}

// at runs fn on (dirfd, name) of rel.
func at(rootfd int, rel string, fn func(dirfd int, name string) error) error {
	dirfd, name, err := resolve(rootfd, rel)
	if err != nil {
		return err
	}
	defer closeDir(rootfd, dirfd)
	return fn(dirfd, name)
}

// errName is an errno's name, "ok" for none.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(e))
	}
	return err.Error()
}

// describe is the transcript's line for one path: the fields that must
// match, or the errno of its lstat.
func describe(rootfd int, rel string) string {
	var st unix.Stat_t
	var target string
	err := at(rootfd, rel, func(dirfd int, name string) error {
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			buf := make([]byte, 4096)
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return err
			}
			target = string(buf[:n])
		}
		return nil
	})
	if err != nil {
		return fmt.Sprintf("  %s: %s", short(rel), errName(err))
	}
	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		size = 0 // a directory's size is its filesystem's business
	}
	s := fmt.Sprintf("  %s: %s %04o uid=%d gid=%d size=%d nlink=%d", short(rel), typeName(st.Mode),
		st.Mode&07777, st.Uid, st.Gid, size, st.Nlink)
	if target != "" {
		s += " -> " + target
	}
	return s
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	}
	return "unknown"
}

// short keeps transcripts readable: a long name is shown by its first
// byte and length.
func short(rel string) string {
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		if len(c) > 16 {
			comps[i] = fmt.Sprintf("%c*%d", c[0], len(c))
		}
	}
	return strings.Join(comps, "/")
}

// dump writes the whole tree beneath rootfd, sorted, with user xattrs.
func dump(w io.Writer, rootfd int) {
	var walk func(dirfd int, prefix string)
	walk = func(dirfd int, prefix string) {
		names, err := readNames(dirfd)
		if err != nil {
			fmt.Fprintf(w, "  %s/: %s\n", short(prefix), errName(err))
			return
		}
		for _, n := range names {
			rel := n
			if prefix != "" {
				rel = prefix + "/" + n
			}
			fmt.Fprintln(w, describe(rootfd, rel)+xattrs(dirfd, n))
			var st unix.Stat_t
			if unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					fmt.Fprintf(w, "  %s/: %s\n", short(rel), errName(err))
					continue
				}
				walk(fd, rel)
				unix.Close(fd)
			}
		}
	}
	fd, err := unix.Openat(rootfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(w, "  ./: %s\n", errName(err))
		return
	}
	defer unix.Close(fd)
	walk(fd, "")
}

// readNames lists the directory open at dirfd (O_RDONLY), sorted.
func readNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	sort.Strings(names)
	return names, nil
}

// xattrs lists the user.* xattrs and the capabilities of (dirfd, name)
// with their values.
func xattrs(dirfd int, name string) string {
	p := fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return " xattrs:" + errName(err)
	}
	var out []string
	for _, a := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(a, "user.") && a != "security.capability" {
			continue
		}
		v := make([]byte, 256)
		vn, err := unix.Lgetxattr(p, a, v)
		if err != nil {
			out = append(out, a+"="+errName(err))
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", a, v[:vn]))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return ""
	}
	return " xattrs:" + strings.Join(out, ",")
}
