package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens where systemd would ($NOTIFY_SOCKET, a unixgram
// socket) and returns the next message, or "" after a timeout.
func notifySocket(t *testing.T) (path string, next func() string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return path, func() string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := conn.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
}

// TestSystemdNotify: in the foreground, hsmfs says READY=1 over
// $NOTIFY_SOCKET once the mount is live, and STOPPING=1 after SIGTERM
// (Type=notify), both as `hsmfs mount -f` and as -o foreground.
func TestSystemdNotify(t *testing.T) {
	b, mn, j := newDirs(t)
	for _, args := range [][]string{
		{"mount", "-f", "--journal", j, b, mn},
		{b, mn, "-o", "journal=" + j + ",foreground"},
	} {
		sock, next := notifySocket(t)
		cmd := exec.Command(hsmfsBin, args...)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		stderr := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = stderr, stderr
		must(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		stopped := false
		t.Cleanup(func() {
			if !stopped {
				cmd.Process.Kill()
				<-done
			}
			if isMounted(mn) {
				forceUnmount(t, mn, 0)
			}
		})

		if msg := next(); msg != "READY=1" {
			t.Fatalf("hsmfs %s: first notification %q, want READY=1\n%s", strings.Join(args, " "), msg, stderr.String())
		}
		// READY=1 came once the mount was live.
		if !isMounted(mn) {
			t.Fatalf("READY=1 before %s was mounted", mn)
		}
		if pid := int(num(t, status(t, mn), "pid")); pid != cmd.Process.Pid {
			t.Errorf("status pid %d, want the foreground daemon %d", pid, cmd.Process.Pid)
		}
		must(t, cmd.Process.Signal(syscall.SIGTERM))
		if msg := next(); msg != "STOPPING=1" {
			t.Errorf("after SIGTERM: notification %q, want STOPPING=1", msg)
		}
		stopped = true
		waitExit(t, "SIGTERM", done, stderr)
		if isMounted(mn) {
			t.Fatalf("after SIGTERM, %s is still mounted", mn)
		}
	}
}
