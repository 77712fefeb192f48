package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// waitExit waits for a process for as long as it uses CPU, and gives up
// on one that has been idle too long.
func TestWaitExit(t *testing.T) {
	start := func(script string) int {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait() // reap it, so that it is gone once it exits
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd.Process.Pid
	}
	// Busy for 2-3 s, longer than idle: waited for.
	busy := start(`end=$(($(date +%s) + 3)); while [ "$(date +%s)" -lt "$end" ]; do :; done`)
	if err := waitExit(busy, 1500*time.Millisecond, 20*time.Second); err != nil {
		t.Errorf("a busy process: %v", err)
	}
	// Asleep: given up on after idle.
	idle := start("sleep 30")
	t0 := time.Now()
	err := waitExit(idle, 500*time.Millisecond, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "has not exited") {
		t.Errorf("an idle process: %v, want an error", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("gave up on an idle process after %v", d)
	}
	if st, ok := procStat(idle); !ok || st.state == "" || st.start == 0 {
		t.Errorf("procStat of a live process: %+v, %v", st, ok)
	}
	// A zombie (exited, not reaped yet) has exited.
	z := exec.Command("true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	defer z.Wait()
	time.Sleep(200 * time.Millisecond)
	if err := waitExit(z.Process.Pid, time.Second, 5*time.Second); err != nil {
		t.Errorf("a zombie: %v", err)
	}
}
