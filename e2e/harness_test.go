package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mi "github.com/moby/sys/mountinfo"
)

// hsmfsBin is the binary under test, built once by TestMain.
var hsmfsBin string

// tmpRoot holds every temporary directory of the run (TMPDIR points at
// it), so that TestMain can find any mount that a test left behind.
var tmpRoot string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if args := os.Getenv(posixdiffEnv); args != "" {
		return posixdiffChild(args) // a phase of TestPosixDiff
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: SKIPPING ALL TESTS: they need root (FUSE mounts, loop devices, allow_other)")
		return 0
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: SKIPPING ALL TESTS: /dev/fuse is missing:", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "hsmfs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if tmpRoot, err = filepath.EvalSymlinks(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// Traversable, so that user nobody can reach an allow_other mount.
	os.Chmod(tmpRoot, 0o755)
	os.Setenv("TMPDIR", tmpRoot)

	hsmfsBin = os.Getenv("HSMFS_BIN")
	if hsmfsBin == "" {
		hsmfsBin = filepath.Join(tmpRoot, "hsmfs")
		args := []string{"build", "-o", hsmfsBin}
		if os.Getenv("HSMFS_RACE") == "1" {
			args = append(args, "-race")
			// A race-enabled binary sleeps a second at exit by
			// default: every hsmfs command would.
			os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
		}
		args = append(args, "github.com/hsmfs/hsmfs/cmd/hsmfs")
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building hsmfs failed:", err)
			os.RemoveAll(tmpRoot)
			return 1
		}
	}

	code := m.Run()

	if left := mountsUnder(tmpRoot); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "\n!!!!!!!! e2e: %d MOUNT(S) LEFT BEHIND BY THE TESTS !!!!!!!!\n", len(left))
		for _, mnt := range left {
			fmt.Fprintln(os.Stderr, "!!!   ", mnt)
		}
		// Innermost first; lazy, so that a hung daemon cannot block us.
		for i := len(left) - 1; i >= 0; i-- {
			exec.Command("umount", "-l", left[i]).Run()
			exec.Command("fusermount3", "-uz", left[i]).Run()
		}
		code = 1
	}
	if loops := loopsUnder(tmpRoot); len(loops) > 0 {
		fmt.Fprintf(os.Stderr, "\n!!!!!!!! e2e: LOOP DEVICES LEFT BEHIND: %q !!!!!!!!\n", loops)
		for _, dev := range loops {
			exec.Command("losetup", "-d", dev).Run()
		}
		code = 1
	}
	if len(mountsUnder(tmpRoot)) == 0 {
		os.RemoveAll(tmpRoot)
	} else {
		fmt.Fprintln(os.Stderr, "e2e: not removing", tmpRoot, "because mounts remain under it")
	}
	return code
}

// loopsUnder returns the loop devices whose backing file is under root.
func loopsUnder(root string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if p := strings.TrimSpace(string(b)); err == nil && strings.HasPrefix(p, root+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

// mounts returns the mount points of this mount namespace, in order.
func mounts() []string {
	infos, err := mi.GetMounts(nil)
	if err != nil {
		panic(err)
	}
	out := make([]string, len(infos))
	for i, m := range infos {
		out[i] = m.Mountpoint
	}
	return out
}

func mountsUnder(root string) []string {
	var out []string
	for _, m := range mounts() {
		if m == root || strings.HasPrefix(m, root+"/") {
			out = append(out, m)
		}
	}
	return out
}

func isMounted(path string) bool {
	for _, m := range mounts() {
		if m == path {
			return true
		}
	}
	return false
}

// ---- running hsmfs ----

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// hsm runs the hsmfs command line and returns what it printed and its
// exit code. A command that does not end within 2 minutes is killed.
func hsm(t testing.TB, args ...string) result {
	t.Helper()
	return run(t, nil, hsmfsBin, args...)
}

// run runs a command to its end; cred, if set, runs it as another user.
func run(t testing.TB, cred *syscall.Credential, name string, args ...string) result {
	t.Helper()
	return runCmd(t, "", nil, cred, name, args...)
}

// runIn runs a command to its end in dir, with env as its whole
// environment if env is not nil.
func runIn(t testing.TB, dir string, env []string, name string, args ...string) result {
	t.Helper()
	return runCmd(t, dir, env, nil, name, args...)
}

func runCmd(t testing.TB, dir string, env []string, cred *syscall.Credential, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s %q: %v (stderr %q)", name, args, err, r.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %q: did not finish within 2 minutes", name, args)
	}
	return r
}

// ---- mounts ----

// hsmMount is one mount started by a test.
type hsmMount struct {
	Backing, Mnt, Journal, Log string
	Pid                        int    // the daemon
	Stderr                     string // what hsmfs mount printed (warnings)
	unmounted                  bool
}

type mountCfg struct {
	backing, mnt, journal string
	args                  []string
}

type mountOpt func(*mountCfg)

// withBacking, withMnt and withJournal use the given directories instead
// of fresh ones.
func withBacking(dir string) mountOpt { return func(c *mountCfg) { c.backing = dir } }
func withMnt(dir string) mountOpt     { return func(c *mountCfg) { c.mnt = dir } }
func withJournal(dir string) mountOpt { return func(c *mountCfg) { c.journal = dir } }

// withArgs adds arguments to `hsmfs mount` (-o allow_other, --log F, ...).
func withArgs(args ...string) mountOpt { return func(c *mountCfg) { c.args = append(c.args, args...) } }

// newDirs makes BACKING, MNT and a JOURNAL path (not created: hsmfs makes
// it) in a fresh temporary directory.
func newDirs(t testing.TB) (backing, mnt, journal string) {
	t.Helper()
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	backing, mnt = filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return backing, mnt, filepath.Join(base, "journal")
}

// mount runs `hsmfs mount` and returns once the mount is live. Cleanup
// unmounts it (falling back to a lazy unmount and killing the daemon),
// checks that the daemon ended cleanly, and shows its log if the test
// failed.
func mount(t testing.TB, opts ...mountOpt) *hsmMount {
	t.Helper()
	var c mountCfg
	for _, o := range opts {
		o(&c)
	}
	b, mn, j := c.backing, c.mnt, c.journal
	if b == "" || mn == "" || j == "" {
		nb, nm, nj := newDirs(t)
		b, mn, j = or(b, nb), or(mn, nm), or(j, nj)
	}
	m := &hsmMount{Backing: b, Mnt: mn, Journal: j, Log: j + ".log"}
	for i, a := range c.args {
		if a == "--log" && i+1 < len(c.args) {
			m.Log = c.args[i+1]
		}
	}
	logStart := fileSize(m.Log)
	t.Cleanup(func() {
		if t.Failed() {
			dumpLog(t, m.Log, logStart)
		}
	})
	args := append([]string{"mount", "--journal", j}, c.args...)
	if os.Getenv("HSMFS_E2E_DEBUG") == "1" {
		args = append(args, "--debug")
	}
	args = append(args, b, mn)
	r := hsm(t, args...)
	if r.code != 0 {
		if isMounted(mn) {
			forceUnmount(t, mn, 0)
		}
		t.Fatalf("hsmfs %s: %v", strings.Join(args, " "), r)
	}
	t.Cleanup(func() { m.cleanup(t, logStart) })
	if !isMounted(mn) {
		t.Fatalf("hsmfs mount exited 0 but %s is not in /proc/self/mounts", mn)
	}
	st := status(t, mn)
	pid, ok := st["pid"].(float64)
	if !ok || pid <= 0 {
		t.Fatalf("status has no pid: %v", st)
	}
	m.Pid = int(pid)
	m.Stderr = r.stderr
	return m
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// unmount runs `hsmfs umount` and checks that the mount is gone and the
// daemon has exited cleanly.
func (m *hsmMount) unmount(t testing.TB) {
	t.Helper()
	if m.unmounted {
		return
	}
	r := hsm(t, "umount", m.Mnt)
	if r.code != 0 {
		t.Fatalf("hsmfs umount %s: %v", m.Mnt, r)
	}
	m.unmounted = true
	if isMounted(m.Mnt) {
		t.Fatalf("%s is still mounted after hsmfs umount", m.Mnt)
	}
	if alive(m.Pid) {
		t.Fatalf("daemon %d still runs after hsmfs umount returned", m.Pid)
	}
	m.checkCleanExit(t)
}

// checkCleanExit checks that the last run in the log ended with a clean
// unmount (which marks the journal clean, so that the next mount does
// not report a recovery).
func (m *hsmMount) checkCleanExit(t testing.TB) {
	t.Helper()
	data, _ := os.ReadFile(m.Log)
	last := string(data)
	if i := strings.LastIndex(last, "msg=mounted"); i >= 0 {
		last = last[i:]
	}
	if !strings.Contains(last, "unmounted cleanly") || strings.Contains(last, "hsmfs stopped") {
		t.Errorf("daemon %d of %s did not end cleanly; its log since the mount:\n%s", m.Pid, m.Mnt, last)
	}
	if strings.Contains(last, "WARNING: DATA RACE") {
		t.Errorf("the race detector found a data race in daemon %d of %s; its log since the mount:\n%s", m.Pid, m.Mnt, last)
	}
}

func (m *hsmMount) cleanup(t testing.TB, logStart int64) {
	t.Helper()
	if m.unmounted {
		return
	}
	m.unmounted = true
	r := hsm(t, "umount", m.Mnt)
	// A file closed just before is released by the kernel a little
	// later (FUSE RELEASE is asynchronous): busy for a moment is not a
	// failure.
	for i := 0; i < 25 && r.code != 0 && strings.Contains(r.stderr, "busy"); i++ {
		time.Sleep(200 * time.Millisecond)
		r = hsm(t, "umount", m.Mnt)
	}
	if r.code == 0 && !isMounted(m.Mnt) && !alive(m.Pid) {
		m.checkCleanExit(t)
		return
	}
	t.Errorf("cleanup: hsmfs umount %s: %v; forcing", m.Mnt, r)
	forceUnmount(t, m.Mnt, m.Pid)
}

// forceUnmount lazily unmounts mnt and kills the daemon pid (only if it
// still runs our binary).
func forceUnmount(t testing.TB, mnt string, pid int) {
	t.Helper()
	if isMounted(mnt) {
		exec.Command("umount", "-l", mnt).Run()
	}
	if isMounted(mnt) {
		exec.Command("fusermount3", "-uz", mnt).Run()
	}
	if isMounted(mnt) {
		t.Errorf("cleanup: could not unmount %s", mnt)
	}
	if pid > 0 && alive(pid) && isOurs(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 500 && alive(pid); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is not running any more, but a dying process whose leader
	// is already a zombie may still have threads exiting, and it keeps
	// its files (the journal's lock) until the last one is gone: look at
	// every thread.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
			if s := data[i+2]; s != 'Z' && s != 'X' {
				return true
			}
		}
	}
	return false
}

// isOurs reports whether pid runs the binary under test.
func isOurs(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && exe == hsmfsBin
}

func dumpLog(t testing.TB, path string, from int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("daemon log %s: %v", path, err)
		return
	}
	if from > int64(len(data)) {
		from = 0
	}
	data = data[from:]
	if dir := os.Getenv("HSMFS_E2E_LOGDIR"); dir != "" {
		keep := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log")
		if err := os.WriteFile(keep, data, 0o644); err == nil {
			t.Logf("daemon log kept in %s", keep)
		}
	}
	const max = 64 << 10
	if len(data) > max {
		data = append([]byte("...\n"), data[len(data)-max:]...)
	}
	t.Logf("daemon log %s:\n%s", path, data)
}
