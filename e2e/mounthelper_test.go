package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// inMountNS runs a shell script as mount(8) would meet it at boot: in a
// private mount namespace whose /usr/local/sbin holds only the hsmfs
// under test. mount(8) clears PATH before it runs /sbin/mount.fuse3, and
// the shell that mount.fuse3 starts then looks only in the standard
// directories, so a PATH of the test's own cannot point it at the binary.
// Nothing mounted in the namespace is seen outside: the script's exit
// trap detaches what it left, and the caller waits for the daemons.
func inMountNS(t *testing.T, script string, env ...string) result {
	t.Helper()
	if _, err := os.Stat("/sbin/mount.fuse"); err != nil {
		t.Skip("mount.fuse (Debian's fuse3: mount.fuse3) is missing, so mount(8) cannot mount fuse.hsmfs:", err)
	}
	if st, err := os.Stat("/usr/local/sbin"); err != nil || !st.IsDir() {
		t.Skip("/usr/local/sbin, where the test shows mount(8) the hsmfs under test, is missing:", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is missing:", err)
	}
	bindir := t.TempDir()
	must(t, os.Symlink(hsmfsBin, filepath.Join(bindir, "hsmfs")))
	full := `set -eu
mount --bind "$BINDIR" /usr/local/sbin
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
` + script
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", full)
	cmd.Env = append(os.Environ(), append([]string{"BINDIR=" + bindir, "HSMFS=" + hsmfsBin}, env...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("unshare: %v", err)
	}
	return r
}

// nsMount is what a script saw of one mount: its /proc/mounts line and
// the daemon's status.
type nsMount struct {
	source, fstype, opts string
	pid                  int
	journal              string
	recovered            bool
}

// parseNSMounts reads the "MOUNT <line>" and "STATUS <json>" lines that
// the scripts print, in order.
func parseNSMounts(t *testing.T, out string) []nsMount {
	t.Helper()
	var ms []nsMount
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "MOUNT "); ok {
			f := strings.Fields(rest)
			if len(f) < 4 {
				t.Fatalf("bad mount line %q", line)
			}
			ms = append(ms, nsMount{source: unescapeMount(f[0]), fstype: f[2], opts: f[3]})
		}
		if rest, ok := strings.CutPrefix(line, "STATUS "); ok && len(ms) > 0 {
			var st struct {
				Pid       int    `json:"pid"`
				Journal   string `json:"journal"`
				Recovered bool   `json:"recovered"`
			}
			if err := json.Unmarshal([]byte(rest), &st); err != nil {
				t.Fatalf("status %q: %v", rest, err)
			}
			m := &ms[len(ms)-1]
			m.pid, m.journal, m.recovered = st.Pid, st.Journal, st.Recovered
		}
	}
	return ms
}

// showMount prints a MOUNT and a STATUS line for $MNT.
const showMount = `echo "MOUNT $(grep -F " $MNT " /proc/self/mounts)"
echo "STATUS $("$HSMFS" status --json "$MNT")"
`

// waitGone waits for the daemons of the namespace to exit (they do once
// unmounted), killing any that does not, and checks that clean of them
// ended cleanly in log.
func waitGone(t *testing.T, ms []nsMount, log string, clean int) {
	t.Helper()
	for _, m := range ms {
		deadline := time.Now().Add(time.Minute)
		for alive(m.pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(m.pid) {
			t.Errorf("daemon %d still runs a minute after umount(8)", m.pid)
			if isOurs(m.pid) {
				must(t, exec.Command("kill", "-9", fmt.Sprint(m.pid)).Run())
			}
		}
	}
	data, _ := os.ReadFile(log)
	if got := strings.Count(string(data), "unmounted cleanly"); got != clean {
		t.Errorf("%s says \"unmounted cleanly\" %d times, want %d:\n%s", log, got, clean, data)
	}
}

func checkNSMount(t *testing.T, what string, m nsMount, backing, journal string) {
	t.Helper()
	if m.fstype != "fuse.hsmfs" || m.source != backing || m.journal != journal || m.pid <= 0 {
		t.Errorf("%s: mount %+v, want fuse.hsmfs of %s with journal %s", what, m, backing, journal)
	}
	if !strings.Contains(m.opts, "allow_other") {
		t.Errorf("%s: mount options %q lack allow_other", what, m.opts)
	}
}

// TestMountType: `mount -t fuse.hsmfs BACKING MNT -o journal=DIR,...` and
// `umount MNT` of util-linux, through Debian's mount.fuse3; the daemon
// closes its journal cleanly after umount(8).
func TestMountType(t *testing.T) {
	b, mn, j := newDirs(t)
	r := inMountNS(t, `mount -t fuse.hsmfs "$B" "$MNT" -o "journal=$J,allow_other,nofail"
`+showMount+`echo hello > "$MNT/hello"
"$HSMFS" changes "$MNT"
umount "$MNT"
grep -qF " $MNT " /proc/self/mounts && echo STILL MOUNTED
true
`, "B="+b, "MNT="+mn, "J="+j)
	ms := parseNSMounts(t, r.stdout)
	if r.code != 0 || len(ms) != 1 || !strings.Contains(r.stdout, "\nhello\n") || strings.Contains(r.stdout, "STILL MOUNTED") {
		t.Fatalf("mount -t fuse.hsmfs, changes, umount: %v", r)
	}
	checkNSMount(t, "mount -t fuse.hsmfs", ms[0], b, j)
	if data, err := os.ReadFile(filepath.Join(b, "hello")); err != nil || string(data) != "hello\n" {
		t.Errorf("BACKING/hello: %q, %v", data, err)
	}
	waitGone(t, ms, j+".log", 1)
}

// TestFstab: an fstab line of type fuse.hsmfs works with `mount MNT` and
// `mount -a` (here with -T, an fstab of the test's own), also after the
// daemon was killed (hsmfs clears the dead mount), and the -o spellings
// of hsmfs's flags reach hsmfs through mount.fuse3.
func TestFstab(t *testing.T) {
	b, mn, j := newDirs(t)
	logf := filepath.Join(t.TempDir(), "hsmfs.log")
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s %s fuse.hsmfs journal=%s,log=%s,fine_intents,no_passthrough,allow_other,nofail,x-systemd.requires=local-fs.target 0 0\n", b, mn, j, logf)
	must(t, os.WriteFile(fstab, []byte("# a test's own fstab\n"+line), 0o644))
	r := inMountNS(t, `mount -T "$FSTAB" "$MNT"
`+showMount+`umount "$MNT"
mount -a -T "$FSTAB"
`+showMount+`pid=$("$HSMFS" status --json "$MNT" | sed 's/.*"pid":\([0-9]*\).*/\1/')
kill -9 "$pid"
while stat -f "$MNT" >/dev/null 2>&1; do sleep 0.05; done
mount -T "$FSTAB" "$MNT"
`+showMount+`umount "$MNT"
`, "FSTAB="+fstab, "MNT="+mn)
	ms := parseNSMounts(t, r.stdout)
	hows := []string{"mount -T FSTAB MNT", "mount -a -T FSTAB", "mount -T FSTAB MNT over the dead mount"}
	if r.code != 0 || len(ms) != len(hows) || !strings.Contains(r.stderr, "cleared a dead hsmfs mount") {
		t.Fatalf("%s: %v", strings.Join(hows, ", "), r)
	}
	for i, how := range hows {
		checkNSMount(t, how, ms[i], b, j)
	}
	if !ms[2].recovered || ms[1].recovered {
		t.Errorf("recovered: %v after the kill, %v before it; want true, false", ms[2].recovered, ms[1].recovered)
	}
	waitGone(t, ms, logf, 2) // -o log= was obeyed: every run logged there
}

// TestHelperForm: `hsmfs BACKING MOUNTPOINT -o ...` (as mount.fuse3 runs
// it) mounts; a misspelt hsmfs option is a usage error and an option
// that FUSE does not know fails the mount; neither mounts anything.
func TestHelperForm(t *testing.T) {
	b, mn, j := newDirs(t)
	logf := filepath.Join(t.TempDir(), "helper.log")
	for _, opts := range []string{"jornal=" + j, "no-passthrough", "journal", "foreground=1"} {
		if r := hsm(t, b, mn, "-o", "journal="+j+","+opts); r.code != 2 || !usageError(r) {
			t.Errorf("hsmfs B M -o journal=J,%s: %v, want exit 2 with a usage error", opts, r)
		}
	}
	if r := hsm(t, b, mn, "-o", "journal="+j+",log="+logf+",bogus_fuse_option"); r.code != 1 {
		t.Errorf("hsmfs B M -o ...,bogus_fuse_option: %v, want exit 1", r)
	}
	if isMounted(mn) {
		forceUnmount(t, mn, 0)
		t.Fatalf("a refused option line mounted %s", mn)
	}

	r := hsm(t, b, mn, "-o", "rw,journal="+j+",log="+logf+",no_passthrough,fine_intents,nofail,dev,suid")
	if r.code != 0 {
		t.Fatalf("hsmfs B M -o ...: %v", r)
	}
	m := &hsmMount{Backing: b, Mnt: mn, Journal: j, Log: logf, Pid: int(num(t, status(t, mn), "pid"))}
	t.Cleanup(func() { m.cleanup(t, 0) })
	writeFile(t, filepath.Join(mn, "f"), "x")
	waitClosed(t, mn)
	samePaths(t, "changes", plain(t, mn), []string{"f"})
	m.unmount(t)
}

// unescapeMount undoes the octal escapes of /proc/mounts (a line that a
// script inside another mount namespace printed, which the mountinfo
// library cannot read for us).
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
