package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQueryAbandoned: a reader of .hsm/changes killed while its query
// runs ends at once (the kernel keeps a killed reader of a FUSE request
// waiting, unkillable, until the request ends: the daemon must end it),
// and the query is given up; a reader that merely gets a signal it
// handles is not abandoned, and gets its answer. The daemon's debugging
// setting HSMFS_DEBUG_SLOW_QUERY makes every query last 6 s, as one over
// millions of paths, or a deep rename storm's, can.
func TestQueryAbandoned(t *testing.T) {
	t.Setenv("HSMFS_DEBUG_SLOW_QUERY", "6s")
	m := mount(t)
	writeFile(t, filepath.Join(m.Mnt, "a"), "a")
	waitClosed(t, m.Mnt)
	changes := filepath.Join(m.Mnt, ".hsm", "changes")

	cat := exec.Command("cat", changes)
	must(t, cat.Start())
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	must(t, cat.Process.Signal(syscall.SIGKILL))
	cat.Wait()
	took := time.Since(start)
	t.Logf("the killed reader ended %v after SIGKILL", took.Round(time.Millisecond))
	if took > 1500*time.Millisecond {
		t.Errorf("the killed reader ended %v after SIGKILL, want within 1.5 s", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(readLog(m), "query abandoned") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log does not say the query was abandoned")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A signal that the reader handles interrupts the request too, but
	// the reader lives on: its query runs to its end.
	// The script says when its handler is in place (a loaded machine
	// can take longer than any fixed wait to start python), then reads.
	script := `import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *a: None)
sys.stderr.write("ready\n"); sys.stderr.flush()
print(open(sys.argv[1]).read(), end="")`
	py := exec.Command("python3", "-c", script, changes)
	var out strings.Builder
	py.Stdout = &out
	stderr, err := py.StderrPipe()
	must(t, err)
	must(t, py.Start())
	if _, err := bufio.NewReader(stderr).ReadString('\n'); err != nil {
		t.Fatalf("the reader did not start: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // in its read of the slow query
	must(t, py.Process.Signal(syscall.SIGUSR1))
	if err := py.Wait(); err != nil {
		t.Fatalf("the reader that handled a signal: %v", err)
	}
	if out.String() != "a\n" {
		t.Errorf("the reader that handled a signal read %q, want a", out.String())
	}
	if n := strings.Count(readLog(m), `msg="query abandoned`); n != 1 {
		t.Errorf("%d queries abandoned, want 1 (the killed reader's)", n)
	}
}

func readLog(m *hsmMount) string {
	b, _ := os.ReadFile(m.Log)
	return string(b)
}
