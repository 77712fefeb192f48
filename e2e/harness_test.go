package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hsmfsBin is the binary under test, built once by TestMain.
var hsmfsBin string

// tmpRoot holds every temporary directory of the run (TMPDIR points at
// it), so that TestMain can find any mount that a test left behind.
var tmpRoot string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
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
	if out, _ := exec.Command("losetup", "-j", tmpRoot).Output(); len(out) > 0 {
		fmt.Fprintf(os.Stderr, "!!!!!!!! e2e: LOOP DEVICES LEFT BEHIND: %s", out)
	}
	if len(mountsUnder(tmpRoot)) == 0 {
		os.RemoveAll(tmpRoot)
	} else {
		fmt.Fprintln(os.Stderr, "e2e: not removing", tmpRoot, "because mounts remain under it")
	}
	return code
}

// mounts returns the mount points listed in /proc/self/mounts, in order.
func mounts() []string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			out = append(out, unescapeMount(f[1]))
		}
	}
	return out
}

func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
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
	Pid                        int // the daemon
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
}

func (m *hsmMount) cleanup(t testing.TB, logStart int64) {
	t.Helper()
	if m.unmounted {
		return
	}
	m.unmounted = true
	r := hsm(t, "umount", m.Mnt)
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
	// A zombie is not running any more.
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
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
	const max = 64 << 10
	if len(data) > max {
		data = append([]byte("...\n"), data[len(data)-max:]...)
	}
	t.Logf("daemon log %s:\n%s", path, data)
}

// ---- the control directory ----

// Header is the first line of changes.json.
type Header struct {
	Query     uint64 `json:"query"`
	Blessed   uint64 `json:"blessed"`
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
}

// Entry is one path of changes.json.
type Entry struct {
	Path     string   `json:"path"`
	PathB64  string   `json:"path_b64"`
	Type     string   `json:"type"`
	Ops      []string `json:"ops"`
	Period   uint64   `json:"period"`
	Inflight bool     `json:"inflight"`
	Ino      uint64   `json:"ino"`
	Nlink    uint32   `json:"nlink"`
}

// Answer is one parsed changes.json.
type Answer struct {
	Header
	Entries []Entry
	byPath  map[string]*Entry
}

// Paths returns the answer's paths in order.
func (a *Answer) Paths() []string {
	out := make([]string, len(a.Entries))
	for i, e := range a.Entries {
		out[i] = e.Path
	}
	return out
}

// Get returns the entry of path, or nil.
func (a *Answer) Get(path string) *Entry { return a.byPath[path] }

// query runs one query through .hsm/changes.json and checks the form of
// the answer: a header whose count matches, known types and ops, paths
// sorted bytewise and unique.
func query(t testing.TB, mnt string) *Answer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "changes.json"))
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return parseAnswer(t, data)
}

func parseAnswer(t testing.TB, data []byte) *Answer {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	if !sc.Scan() {
		t.Fatalf("changes.json is empty")
	}
	a := &Answer{byPath: map[string]*Entry{}}
	if err := json.Unmarshal(sc.Bytes(), &a.Header); err != nil {
		t.Fatalf("changes.json header %q: %v", sc.Bytes(), err)
	}
	var hdr map[string]any
	json.Unmarshal(sc.Bytes(), &hdr)
	for _, k := range []string{"query", "blessed", "recovered", "count"} {
		if _, ok := hdr[k]; !ok {
			t.Errorf("changes.json header %s lacks %q", sc.Bytes(), k)
		}
	}
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("changes.json line %q: %v", sc.Bytes(), err)
		}
		if e.PathB64 != "" {
			raw, err := base64.StdEncoding.DecodeString(e.PathB64)
			if err != nil {
				t.Fatalf("changes.json: bad path_b64 in %q: %v", sc.Bytes(), err)
			}
			e.Path = string(raw)
		}
		checkEntry(t, &e)
		a.Entries = append(a.Entries, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("changes.json: %v", err)
	}
	if a.Count != len(a.Entries) {
		t.Errorf("changes.json header says count %d, but %d paths follow", a.Count, len(a.Entries))
	}
	for i := range a.Entries {
		e := &a.Entries[i]
		if i > 0 && a.Entries[i-1].Path >= e.Path {
			t.Errorf("changes.json paths not sorted bytewise and unique: %q then %q", a.Entries[i-1].Path, e.Path)
		}
		a.byPath[e.Path] = e
	}
	return a
}

var knownOps = map[string]bool{
	"write": true, "truncate": true, "fallocate": true, "copy_file_range": true, "create": true,
	"mknod": true, "mkdir": true, "symlink": true, "link": true, "unlink": true, "rmdir": true,
	"rename": true, "chmod": true, "chown": true, "utimens": true, "setxattr": true, "removexattr": true,
}

var knownTypes = map[string]bool{"file": true, "dir": true, "symlink": true, "other": true, "gone": true}

func checkEntry(t testing.TB, e *Entry) {
	t.Helper()
	if e.Path == "" || strings.HasPrefix(e.Path, "/") || strings.HasPrefix(e.Path, "./") {
		t.Errorf("changes.json: bad path %q", e.Path)
	}
	if !knownTypes[e.Type] {
		t.Errorf("changes.json: %q has unknown type %q", e.Path, e.Type)
	}
	if len(e.Ops) == 0 {
		t.Errorf("changes.json: %q has no ops", e.Path)
	}
	for _, op := range e.Ops {
		if !knownOps[op] {
			t.Errorf("changes.json: %q has unknown op %q", e.Path, op)
		}
	}
	if e.Period == 0 {
		t.Errorf("changes.json: %q has period 0", e.Path)
	}
}

// plain runs one query through .hsm/changes and returns its lines,
// checking that they are sorted bytewise, unique and relative.
func plain(t testing.TB, mnt string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "changes"))
	if err != nil {
		t.Fatalf("plain query: %v", err)
	}
	return parsePlain(t, data)
}

func parsePlain(t testing.TB, data []byte) []string {
	t.Helper()
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Errorf("plain answer does not end with a newline: %q", data)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for i, l := range lines {
		if l == "" || strings.HasPrefix(l, "/") || strings.HasPrefix(l, "./") {
			t.Errorf("plain answer: bad line %q", l)
		}
		if i > 0 && lines[i-1] >= l {
			t.Errorf("plain answer not sorted bytewise and unique: %q then %q", lines[i-1], l)
		}
	}
	return lines
}

// ctl writes one command to .hsm/ctl in one write(2).
func ctl(mnt, command string) error {
	f, err := os.OpenFile(filepath.Join(mnt, ".hsm", "ctl"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(command))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// bless blesses the latest query.
func bless(t testing.TB, mnt string) {
	t.Helper()
	if err := ctl(mnt, "bless\n"); err != nil {
		t.Fatalf("bless: %v", err)
	}
}

// reset runs a query and blesses it, so that the next query lists only
// what happens from now on.
func reset(t testing.TB, mnt string) {
	t.Helper()
	query(t, mnt)
	bless(t, mnt)
	if a := query(t, mnt); len(a.Entries) != 0 {
		t.Fatalf("right after a bless, with nothing changing, a query lists %q", a.Paths())
	}
	bless(t, mnt)
}

// status reads .hsm/status.
func status(t testing.TB, mnt string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, ".hsm", "status"))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("status %q: %v", data, err)
	}
	return m
}

// num reads a number from status.
func num(t testing.TB, st map[string]any, key string) uint64 {
	t.Helper()
	v, ok := st[key].(float64)
	if !ok {
		t.Fatalf("status has no number %q: %v", key, st)
	}
	return uint64(v)
}

// ---- comparing sets ----

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// setDiff returns what is in a but not in b.
func setDiff(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// samePaths fails the test unless got and want hold the same paths.
func samePaths(t testing.TB, what string, got, want []string) bool {
	t.Helper()
	missing, extra := setDiff(want, got), setDiff(got, want)
	if len(missing) == 0 && len(extra) == 0 {
		return true
	}
	t.Errorf("%s: missing %q, unexpected %q (got %q, want %q)", what, missing, extra, sorted(got), sorted(want))
	return false
}

func hasAll(have, want []string) bool {
	return len(setDiff(want, have)) == 0
}
