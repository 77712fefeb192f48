package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// TestRsyncConsumer is the consumer of the contract: random modifications
// through the mount, then a query, rsync of the answer into DEST, and a
// bless, round after round. After every round DEST must equal the mount,
// and the answer must be exactly the paths that the round touched.
func TestRsyncConsumer(t *testing.T) {
	// A fixed seed by default, so that CI is repeatable; HSMFS_E2E_SEED=random
	// explores (and logs its seed for replay).
	seed := uint64(20261122)
	if s := os.Getenv("HSMFS_E2E_SEED"); s == "random" {
		seed = uint64(time.Now().UnixNano())
	} else if s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HSMFS_E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	rounds := envInt(t, "HSMFS_E2E_ROUNDS", 30)
	opsPerRound := envInt(t, "HSMFS_E2E_OPS", 50)
	t.Logf("seed %d (replay: HSMFS_E2E_SEED=%d go test -run TestRsyncConsumer ./e2e/), %d rounds of %d modifications",
		seed, seed, rounds, opsPerRound)

	m := mount(t)
	dest := filepath.Join(t.TempDir(), "dest")
	fz := &fuzzer{t: t, rng: rand.New(rand.NewPCG(seed, 0x5eed)), mnt: m.Mnt, backing: m.Backing,
		touched: map[string]bool{}, multiIno: map[string]uint64{}, oldPaths: map[string]bool{},
		trace: os.Getenv("HSMFS_E2E_TRACE") == "1"}

	// Round 0: some content, a bless, and a full copy.
	for i := 0; i < 2*opsPerRound; i++ {
		fz.step()
	}
	waitClosed(t, m.Mnt)
	query(t, m.Mnt)
	bless(t, m.Mnt)
	if r := run(t, nil, "rsync", "-a", m.Mnt+"/", dest+"/"); r.code != 0 {
		t.Fatalf("initial rsync -a: %v", r)
	}
	if st := status(t, m.Mnt); num(t, st, "last_query") != num(t, st, "last_blessed") {
		t.Errorf("rsync -a of the whole mount ran a query (status %v): .hsm must stay out of listings", st)
	}
	if !sameTree(t, "after the initial copy", snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{}), "MNT", "DEST") {
		t.FailNow()
	}

	failed := 0
	for round := 1; round <= rounds; round++ {
		fz.touched = map[string]bool{}
		fz.dirRenames = nil
		fz.earlierPairs = append(fz.earlierPairs, fz.dirPairs...)
		fz.dirPairs = nil
		fz.multiIno = map[string]uint64{}
		fz.oldPaths = map[string]bool{}
		fz.log = nil
		for i := 0; i < opsPerRound; i++ {
			fz.step()
		}
		// close(2) does not wait for FUSE RELEASE; wait for them, so
		// that no file of this round is still open for writing when the
		// query starts (it would be listed again in the next round).
		waitClosed(t, m.Mnt)

		data, err := os.ReadFile(filepath.Join(m.Mnt, ".hsm", "changes"))
		if err != nil {
			t.Fatalf("round %d: query: %v", round, err)
		}
		listed := parsePlain(t, data)
		a := query(t, m.Mnt) // for the inode numbers of hard links
		plainMatches(t, fmt.Sprintf("round %d", round), m.Mnt, listed, a)
		ok := fz.checkAnswer(round, a.Paths(), a)

		// The plain answer alone: it lists every name of a file with
		// several links, which the recipe (no -H) copies one by one.
		r := rsyncList(t, m.Mnt, dest, listed)
		if r.code != 0 && r.code != 24 {
			ok = false
			t.Errorf("round %d (seed %d): rsync of the answer: %v", round, seed, r)
		}
		bless(t, m.Mnt)
		ms, ds := snapshot(t, m.Mnt, snapOpts{}), snapshot(t, dest, snapOpts{})
		if !sameTree(t, fmt.Sprintf("round %d (seed %d)", round, seed), ms, ds, "MNT", "DEST") {
			ok = false
			fz.explain(ms, ds, a)
		}
		if ok {
			continue
		}
		if failed++; failed <= 3 {
			t.Logf("round %d: the modifications were:\n  %s\nthe list given to rsync:\n  %s",
				round, strings.Join(fz.log, "\n  "), strings.Join(listed, "\n  "))
		}
		// Start the next round from an exact copy again, so that one
		// problem does not hide the next.
		if r := run(t, nil, "rsync", "-a", "--delete", m.Mnt+"/", dest+"/"); r.code != 0 {
			t.Fatalf("repairing DEST: %v", r)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d rounds failed (seed %d)", failed, rounds, seed)
	}
}
