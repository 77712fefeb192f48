package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWholeAnswer: through a real mount on a file system of its own, a
// directory of 100 files renamed through 60 names, each old name made a
// directory again, would list 100 names beneath each old name; that
// passes 8 × (inodes + records), so the answer says full with no path and
// why. A plain bless of it is refused; hsmfs sync copies the whole tree
// and blesses full; a named consumer's exporter publishes its whole
// answer as one message for the root, and hsmfs follow copies the whole
// tree; status and the metrics count both; the next answer lists paths
// again.
func TestWholeAnswer(t *testing.T) {
	bfs := newLoopFS(t, "ext4", 32<<20)
	b := filepath.Join(bfs.mp, "backing")
	must(t, os.Mkdir(b, 0o755))
	addr := freeAddr(t)
	m := mount(t, withBacking(b), withArgs("--metrics", addr))
	dest := filepath.Join(t.TempDir(), "mirror")
	must(t, os.Mkdir(filepath.Join(m.Mnt, "d"), 0o755))
	for i := range 100 {
		writeFile(t, filepath.Join(m.Mnt, "d", fmt.Sprintf("f%03d", i)), "x")
	}
	syncOK(t, m, dest)
	// A fleet reader of the same mount: a named consumer, its exporter
	// and a follower, which must get the whole answer's full too.
	ns := startNATS(t)
	fleetDest := t.TempDir()
	if r := hsm(t, "consumer", "add", m.Mnt, "fleet"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	fleetRound := func(what string) string {
		t.Helper()
		if r := hsm(t, "export", "--nats", ns.url(), "--stream", exportStream, "--create-stream", "--consumer", "fleet", m.Mnt); r.code != 0 {
			t.Fatalf("%s: export: %v", what, r)
		}
		r := hsm(t, "follow", "--nats", ns.url(), "--stream", exportStream, "--durable", "mirror", m.Mnt, fleetDest)
		if r.code != 0 {
			t.Fatalf("%s: follow: %v", what, r)
		}
		t.Logf("%s: %s", what, strings.TrimSpace(r.stderr))
		return r.stderr
	}
	fleetRound("the fleet's first round")
	name := "d"
	for i := range 60 {
		next := fmt.Sprintf("n%02d", i)
		must(t, os.Rename(filepath.Join(m.Mnt, name), filepath.Join(m.Mnt, next)))
		must(t, os.Mkdir(filepath.Join(m.Mnt, name), 0o755))
		name = next
	}

	data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes.json"))
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var h struct {
		Query   uint64
		Count   int
		Full    bool
		FullWhy string `json:"full_why"`
	}
	must(t, json.Unmarshal([]byte(lines[0]), &h))
	if !h.Full || h.Count != 0 || len(lines) != 1 || !strings.Contains(h.FullWhy, "copy the whole tree") {
		t.Fatalf("answer: %d lines, header %s; want full, no path, and why", len(lines), lines[0])
	}
	t.Logf("header: %s", lines[0])
	if err := ctl(m.Mnt, fmt.Sprintf("bless %d\n", h.Query)); err == nil {
		t.Errorf("a plain bless of the whole answer succeeded")
	}
	if line := syncOK(t, m, dest); !strings.Contains(line, "full copy") {
		t.Errorf("hsmfs sync after the whole answer: %q, want a full copy", line)
	}
	sameTree(t, "after the whole copy", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
	if out := fleetRound("the fleet after the renames"); !strings.Contains(out, "the whole tree copied") {
		t.Errorf("the follower did not copy the whole tree for the whole answer: %s", out)
	}
	sameTree(t, "the follower's copy", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, fleetDest, snapOpts{}), "MNT", "mirror")
	// One for the default consumer, one for fleet.
	if n := status(t, m.Mnt)["whole_answers"]; n != 2.0 {
		t.Errorf("status whole_answers %v, want 2", n)
	}
	if n := metricValue(t, scrape(t, addr), "hsmfs_whole_answers_total"); n != 2 {
		t.Errorf("hsmfs_whole_answers_total %v, want 2", n)
	}
	writeFile(t, filepath.Join(m.Mnt, name, "new"), "new")
	if line := syncOK(t, m, dest); strings.Contains(line, "full copy") {
		t.Errorf("the sync after the full bless: %q, want no full copy", line)
	}
	sameTree(t, "after the next sync", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST")
}
