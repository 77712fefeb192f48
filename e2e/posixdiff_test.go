package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hsmfs/hsmfs/tools/posixdiff"
)

// posixdiffEnv, when set, makes the test binary run one phase of the
// differential test (ROOT SEED PHASE STEPS) instead of the tests.
const posixdiffEnv = "HSMFS_POSIXDIFF_PHASE"

func posixdiffChild(args string) int {
	var root string
	var seed uint64
	var phase, steps int
	if _, err := fmt.Sscan(args, &root, &seed, &phase, &steps); err != nil {
		fmt.Fprintln(os.Stderr, "posixdiff:", err)
		return 2
	}
	if err := posixdiff.Run(root, seed, phase, steps, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestPosixDiff runs the same seeded random sequence of calls in a plain
// directory and through a mount (allow_other, default_permissions), phase
// by phase as root, nobody and a user with a supplementary group, and
// requires the two transcripts to be equal: every errno, and the type,
// mode, owner, group, size, link count and target of every path touched
// (tools/posixdiff). make posixtest runs the long form
// (HSMFS_POSIXDIFF_STEPS, HSMFS_POSIXDIFF_SEEDS, HSMFS_POSIXDIFF_SEED).
func TestPosixDiff(t *testing.T) {
	steps := envInt(t, "HSMFS_POSIXDIFF_STEPS", 1600) // per seed
	seeds := envInt(t, "HSMFS_POSIXDIFF_SEEDS", 2)
	base := uint64(envInt(t, "HSMFS_POSIXDIFF_SEED", 1))
	const phases = 4
	bin := runnableTestBinary(t)
	for i := 0; i < seeds; i++ {
		seed := base + uint64(i)
		for _, pt := range []bool{true, false} {
			t.Run(fmt.Sprintf("seed%d/passthrough=%v", seed, pt), func(t *testing.T) {
				var args []string
				if !pt {
					args = append(args, "--no-passthrough")
				}
				// dev: device nodes open as on the backing filesystem (FUSE mounts
				// are nodev by default; docs/usage.md).
				m := mount(t, withArgs(append(args, "-o", "allow_other,default_permissions,dev")...))
				// One level down on both sides, so that a symlink to
				// "../x" meets the same (empty) directory.
				ref := filepath.Join(filepath.Dir(m.Backing), "ref", "t")
				mnt := filepath.Join(m.Mnt, "t")
				must(t, os.Mkdir(filepath.Dir(ref), 0o755))
				for _, d := range []string{ref, mnt} {
					must(t, os.Mkdir(d, 0o777))
					must(t, os.Chmod(d, 0o777))
				}
				for p := 0; p < phases; p++ {
					want := runPhase(t, bin, ref, seed, p, steps/phases)
					got := runPhase(t, bin, mnt, seed, p, steps/phases)
					if d := firstDiff(want, got); d != "" {
						t.Fatalf("seed %d, phase %d as %s: the mount differs from a plain directory (rerun with HSMFS_POSIXDIFF_SEED=%d HSMFS_POSIXDIFF_SEEDS=1):\n%s",
							seed, p, posixdiff.PhaseIdentity(p).Name, seed, d)
					}
				}
			})
		}
	}
}

// runnableTestBinary copies this test binary where every user can run it
// (go test builds it in a directory only root can enter).
func runnableTestBinary(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(tmpRoot, "e2e-posixdiff.test")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	self, err := os.Executable()
	must(t, err)
	in, err := os.Open(self)
	must(t, err)
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
	must(t, os.Rename(tmp, dst))
	return dst
}

// runPhase runs one phase in a process of the phase's identity and
// returns its transcript.
func runPhase(t *testing.T, bin, root string, seed uint64, phase, steps int) []string {
	t.Helper()
	id := posixdiff.PhaseIdentity(phase)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d", posixdiffEnv, root, seed, phase, steps))
	cmd.Dir = "/"
	if id.UID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.Groups}}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("phase %d as %s in %s: %v\n%s", phase, id.Name, root, err, stderr.String())
	}
	return strings.Split(stdout.String(), "\n")
}

// firstDiff shows the first line where the transcripts differ, with the
// step it belongs to, or "" if they are equal.
func firstDiff(want, got []string) string {
	for i := 0; i < max(len(want), len(got)); i++ {
		w, g := lineAt(want, i), lineAt(got, i)
		if w == g {
			continue
		}
		step := ""
		for j := i; j >= 0; j-- {
			if l := lineAt(want, j); l != "" && !strings.HasPrefix(l, " ") {
				step = l
				break
			}
		}
		return fmt.Sprintf("  step:  %s\n  plain: %s\n  mount: %s%s", step, w, g, lastSeen(want, i, step))
	}
	return ""
}

func lineAt(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "<end>"
}

// lastSeen shows, for each path that the step names, the last line of
// the plain transcript before line i that described it.
func lastSeen(lines []string, i int, step string) string {
	var out string
	for _, tok := range strings.Fields(step) {
		if strings.ContainsAny(tok, "=:") {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if strings.HasPrefix(lines[j], "  "+tok+":") {
				out += fmt.Sprintf("\n  before (plain, line %d):%s", j, lines[j])
				break
			}
		}
	}
	return out
}
