package lifecycle

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"github.com/hsmfs/hsmfs/internal/outside"
)

// served is one Serve running in this process.
type served struct {
	cfg  Config
	done chan error
}

// serve starts Serve on cfg and waits for ready; the test's cleanup
// unmounts it if the test has not.
func serve(t *testing.T, cfg Config) (*served, error) {
	t.Helper()
	s := &served{cfg: cfg, done: make(chan error, 1)}
	ready := make(chan error, 1)
	go func() {
		s.done <- Serve(cfg, slog.New(slog.DiscardHandler), func(err error) { ready <- err }, func(string) {})
	}()
	select {
	case err := <-ready:
		if err != nil {
			<-s.done
			return nil, err
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve not ready in 30 s")
	}
	t.Cleanup(func() { s.stop(t) })
	return s, nil
}

// stop unmounts from outside, as umount(8) does, and waits for Serve's
// clean end (a second call does nothing).
func (s *served) stop(t *testing.T) {
	t.Helper()
	if s.done == nil {
		return
	}
	for try := 0; unix.Unmount(s.cfg.Mountpoint, 0) != nil; try++ {
		if try == 50 {
			unix.Unmount(s.cfg.Mountpoint, unix.MNT_DETACH)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Serve after the unmount: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Serve did not return 30 s after the unmount")
	}
	s.done = nil
}

// paths is one query's answer, as paths.
func paths(t *testing.T, mnt string) (uint64, []string) {
	t.Helper()
	c, err := hsmctl.Open(mnt, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Query()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var ps []string
	for {
		e, err := a.NextEntry()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return a.Header.Query, ps
		}
		ps = append(ps, e.Path)
	}
}

// TestServeLifecycle runs the daemon's life in this process: a change
// made around hsmfs between two mounts is a record before the second
// mount is ready (the outside check runs before the mount goes live, and
// the clean end left the index it checks against), and a second tracker
// of the same BACKING is refused while the first one runs.
func TestServeLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a FUSE mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	back, state := t.TempDir(), t.TempDir()
	cfg := Config{Backing: back, Mountpoint: t.TempDir(), Journal: filepath.Join(state, "journal"),
		Foreground: true, Version: "test"}
	s, err := serve(t, cfg)
	if err != nil {
		t.Fatalf("first mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Mountpoint, "through"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, got := paths(t, cfg.Mountpoint)
	if !strings.Contains(strings.Join(got, " "), "through") {
		t.Errorf("first answer %q lacks through", got)
	}
	c, _ := hsmctl.Open(cfg.Mountpoint, "")
	if err := c.Bless(id, false, ""); err != nil {
		t.Fatal(err)
	}

	second := cfg
	second.Mountpoint = t.TempDir()
	second.Journal = filepath.Join(state, "other-journal")
	if _, err := serve(t, second); err == nil || !strings.Contains(err.Error(), "tracked already") {
		t.Errorf("a second tracker of the same BACKING: %v, want a refusal (tracked already)", err)
	}

	s.stop(t)
	for _, f := range []string{outside.IndexPath(cfg.Journal), outside.DeltasPath(cfg.Journal)} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after the clean end, the next check's index: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(back, "around"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := serve(t, cfg); err != nil {
		t.Fatalf("second mount: %v", err)
	}
	_, got = paths(t, cfg.Mountpoint)
	// The root's times changed with its new entry: "." is listed too.
	if strings.Join(got, " ") != ". around" {
		t.Errorf("the answer after a change made around hsmfs is %q, want exactly [. around]", got)
	}
}
