package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	mi "github.com/moby/sys/mountinfo"
)

// --- cleanup stack ---

type cleanupItem struct {
	name string
	once sync.Once
	fn   func()
}

func (it *cleanupItem) run() { it.once.Do(it.fn) }

type cleanups struct {
	mu    sync.Mutex
	runMu sync.Mutex
	items []*cleanupItem
}

func newCleanups() *cleanups { return &cleanups{} }

func (c *cleanups) push(name string, fn func()) *cleanupItem {
	it := &cleanupItem{name: name, fn: fn}
	c.mu.Lock()
	c.items = append(c.items, it)
	c.mu.Unlock()
	return it
}

// runAll runs every pending item, newest first.
func (c *cleanups) runAll() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.mu.Lock()
	items := append([]*cleanupItem(nil), c.items...)
	c.items = nil
	c.mu.Unlock()
	for i := len(items) - 1; i >= 0; i-- {
		items[i].run()
	}
}

// --- mounts ---

// unmountPath unmounts p, retrying while busy, then detaches it lazily.
func unmountPath(p string, patience time.Duration) error {
	if !isMountpoint(p) {
		return nil
	}
	deadline := time.Now().Add(patience)
	var err error
	for {
		err = syscall.Unmount(p, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if derr := syscall.Unmount(p, syscall.MNT_DETACH); derr != nil {
		return fmt.Errorf("unmount %s: %v; detach: %v", p, err, derr)
	}
	return fmt.Errorf("unmount %s: %v (detached lazily)", p, err)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	infos, err := mi.GetMounts(nil)
	if err != nil {
		return nil
	}
	var ms []string
	for _, m := range infos {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			ms = append(ms, m.Mountpoint)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

func isMountpoint(p string) bool {
	for _, m := range mountsUnder(p) {
		if m == p {
			return true
		}
	}
	return false
}

// removeTree deletes dir without crossing into other filesystems.
func removeTree(dir string) {
	if _, err := os.Lstat(dir); err != nil {
		return
	}
	if ms := mountsUnder(dir); len(ms) > 0 {
		fmt.Fprintf(os.Stderr, "cleanup: not removing %s: still mounted: %v\n", dir, ms)
		return
	}
	if out, err := exec.Command("rm", "-rf", "--one-file-system", dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cleanup: rm -rf %s: %v: %s\n", dir, err, out)
	}
}

func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is not alive.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

func runTimeout(c *exec.Cmd, d time.Duration) ([]byte, error) {
	var buf bytes.Buffer
	c.Stdout, c.Stderr = &buf, &buf
	if err := c.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return buf.Bytes(), err
	case <-time.After(d):
		c.Process.Kill()
		<-done
		return buf.Bytes(), fmt.Errorf("timed out after %s", d)
	}
}

// --- descriptions ---

var fsNames = map[int64]string{
	0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
	0x794c7630: "overlayfs", 0x65735546: "fuse", 0x2FC12FC1: "zfs", 0x6969: "nfs",
}

func fsDesc(dir string) string {
	var st syscall.Statfs_t
	name := "?"
	if err := syscall.Statfs(dir, &st); err == nil {
		if n, ok := fsNames[int64(st.Type)]; ok {
			name = n
		} else {
			name = fmt.Sprintf("fs type %#x", st.Type)
		}
	}
	src := ""
	best := ""
	infos, _ := mi.GetMounts(nil)
	for _, m := range infos {
		mp := m.Mountpoint
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, src = mp, m.Source
		}
	}
	if strings.Contains(dir, "/fs-") && strings.HasPrefix(src, "/dev/loop") {
		src += ", loop-mounted image"
	}
	return fmt.Sprintf("%s (%s) at %s", name, src, dir)
}

func sameDev(a, b string) bool {
	var sa, sb syscall.Stat_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "linux"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "Linux " + string(b)
}
