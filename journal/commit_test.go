package journal

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/hsmfs/hsmfs/checkpoint"
)

func TestGroupCommit(t *testing.T) {
	j := openT(t, t.TempDir())
	// Open of a new journal syncs its metadata.
	before := j.Syncs()
	if err := j.Append([]*checkpoint.Record{rec(1, "single")}); err != nil {
		t.Fatal(err)
	}
	if n := j.Syncs() - before; n != 1 {
		t.Errorf("one Append: %d syncs, want 1", n)
	}

	const goroutines, perG = 16, 200
	before = j.Syncs()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				r := rec(2, fmt.Sprintf("g%d/%d", g, i))
				if err := j.Append([]*checkpoint.Record{r}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := j.Syncs() - before
	calls := uint64(goroutines * perG)
	t.Logf("%d Appends, %d syncs: %.1f Appends per sync", calls, syncs, float64(calls)/float64(syncs))
	if syncs >= calls {
		t.Errorf("%d syncs for %d Appends: no group commit", syncs, calls)
	}

	out := scanAll(t, j, 2)
	if len(out) != int(calls) {
		t.Fatalf("scanned %d records, want %d", len(out), calls)
	}
	seen := map[string]bool{}
	for i, s := range out {
		if i > 0 && s.r.Seq <= out[i-1].r.Seq {
			t.Fatalf("Seq not increasing: %d after %d", s.r.Seq, out[i-1].r.Seq)
		}
		seen[s.r.Path] = true
	}
	if len(seen) != int(calls) {
		t.Errorf("%d distinct paths, want %d", len(seen), calls)
	}
}

func TestDropBeforeConcurrentWithAppend(t *testing.T) {
	j := openT(t, t.TempDir())
	const perPeriod = 3000
	for p := uint64(1); p <= 4; p++ {
		recs := make([]*checkpoint.Record, perPeriod)
		for i := range recs {
			recs[i] = rec(p, fmt.Sprint(i))
		}
		if err := j.Append(recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs[:100] {
			if err := j.Complete(r.Period, r.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Appends into period 5 while periods 1 and 2 are dropped.
	done := make(chan struct{})
	var appended int
	var appendErr error
	go func() {
		defer close(done)
		for i := 0; i < 500; i++ {
			if appendErr = j.Append([]*checkpoint.Record{rec(5, fmt.Sprint(i))}); appendErr != nil {
				return
			}
			if appendErr = j.Complete(5, uint64(4*perPeriod+i+1)); appendErr != nil {
				return
			}
			appended++
		}
	}()
	if err := j.DropBefore(3); err != nil {
		t.Fatal(err)
	}
	<-done
	if appendErr != nil {
		t.Fatal(appendErr)
	}

	counts := map[uint64]int{}
	completions := map[uint64]int{}
	for _, s := range scanAll(t, j, 0) {
		counts[s.r.Period]++
		if s.completed {
			completions[s.r.Period]++
		}
	}
	want := map[uint64]int{3: perPeriod, 4: perPeriod, 5: appended}
	for p := uint64(1); p <= 5; p++ {
		if counts[p] != want[p] {
			t.Errorf("period %d: %d records, want %d", p, counts[p], want[p])
		}
	}
	if completions[3] != 100 || completions[4] != 100 || completions[5] != appended {
		t.Errorf("completions per period: %v", completions)
	}
	// The completions of the dropped periods went too.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(j.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completions != uint64(200+appended) || rep.Orphans != 0 || rep.MinPeriod != 3 {
		t.Errorf("after drop: %+v", rep)
	}
}

func TestReserveENOSPC(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := Open(dir, "/backing", Options{ReserveBytes: math.MaxInt64})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	err = j.Append([]*checkpoint.Record{rec(1, "a")})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append below the reserve: %v, want ENOSPC", err)
	}
	t.Log(err)
	if err := j.SaveState(checkpoint.State{Current: 1}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("SaveState below the reserve: %v", err)
	}
	if err := j.Complete(1, 1); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Complete below the reserve: %v", err)
	}
	if out := scanAll(t, j, 0); len(out) != 0 {
		t.Errorf("records written despite ENOSPC: %+v", out)
	}
	if j.Syncs() != 0 {
		t.Errorf("%d syncs despite ENOSPC", j.Syncs())
	}
	// A new journal cannot even be created.
	if _, err := Open(t.TempDir(), "/backing", Options{ReserveBytes: math.MaxInt64}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Open of a new journal below the reserve: %v", err)
	}
}

func TestWithErrno(t *testing.T) {
	// How badger reports a failed msync: the errno only as text.
	flat := fmt.Errorf("Unable to sync value log err: %v", fmt.Errorf("msync: %w", syscall.EIO))
	err := withErrno(flat)
	if !errors.Is(err, syscall.EIO) || err.Error() != flat.Error() {
		t.Errorf("withErrno(%q) = %v", flat, err)
	}
	if errors.Is(err, syscall.ENOSPC) {
		t.Error("EIO became ENOSPC")
	}
	plain := errors.New("something else")
	if withErrno(plain) != plain {
		t.Error("withErrno changed an error without errno")
	}
}

func listFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Size()
	}
	return m
}

func TestDamagedManifest(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if err := j.Append([]*checkpoint.Record{rec(1, "a")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "MANIFEST")
	garbage := []byte(strings.Repeat("not a manifest! ", 8))
	if err := os.WriteFile(manifest, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	before := listFiles(t, dir)

	_, err := Open(dir, "/backing", Options{})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of a damaged journal: %v, want ErrDamaged", err)
	}
	t.Log(err)
	if _, err := Check(dir); !errors.Is(err, ErrDamaged) {
		t.Errorf("Check of a damaged journal: %v, want ErrDamaged", err)
	}

	after := listFiles(t, dir)
	delete(before, lockName) // our pid file may change size
	delete(after, lockName)
	for name, size := range before {
		if after[name] != size {
			t.Errorf("%s: size %d before, %d after", name, size, after[name])
		}
	}
	if got, _ := os.ReadFile(manifest); string(got) != string(garbage) {
		t.Error("MANIFEST was rewritten")
	}
}

func TestDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if err := j.Append([]*checkpoint.Record{rec(1, "a"), rec(1, "b")}); err != nil {
		t.Fatal(err)
	}
	// Garbage written behind the journal's back, as a bit flip would.
	if err := j.db.Update(func(txn *badger.Txn) error {
		return txn.Set(intentKey(1, 1), []byte{1, 99, 0, 0})
	}); err != nil {
		t.Fatal(err)
	}
	err := j.Scan(0, func(*checkpoint.Record, bool) error { return nil })
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Scan over garbage: %v, want ErrDamaged", err)
	}
	t.Log(err)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir)
	if !errors.Is(err, ErrDamaged) || rep.Damaged != 1 || rep.Records != 1 {
		t.Errorf("Check: %+v, %v", rep, err)
	}
}

func TestUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if err := j.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey(metaFormat), []byte{formatVersion + 1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, "/backing", Options{})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "format version") {
		t.Fatalf("Open with an unknown format: %v", err)
	}
	if _, err := Check(dir); !errors.Is(err, ErrDamaged) {
		t.Errorf("Check: %v", err)
	}
}

// The child side of the cross-process tests: run as the test binary with
// HSMFS_JOURNAL_CHILD set to the journal directory.
func TestHelperChild(t *testing.T) {
	dir := os.Getenv("HSMFS_JOURNAL_CHILD")
	if dir == "" {
		t.Skip("only run as a child process")
	}
	j, err := Open(dir, "/backing", Options{})
	switch {
	case errors.Is(err, ErrInUse):
		fmt.Println("CHILD: in use")
		return
	case err != nil:
		fmt.Println("CHILD: error:", err)
		return
	}
	if os.Getenv("HSMFS_JOURNAL_CHILD_DIE") == "" {
		fmt.Println("CHILD: opened")
		j.Close()
		return
	}
	// Write, complete without a sync, and die without closing.
	r := rec(1, "from child")
	if err := j.Append([]*checkpoint.Record{r}); err != nil {
		fmt.Println("CHILD: error:", err)
		return
	}
	if err := j.Complete(r.Period, r.Seq); err != nil {
		fmt.Println("CHILD: error:", err)
		return
	}
	fmt.Println("CHILD: written")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

func runChild(t *testing.T, dir string, die bool) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HSMFS_JOURNAL_CHILD="+dir)
	if die {
		cmd.Env = append(cmd.Env, "HSMFS_JOURNAL_CHILD_DIE=1")
	}
	out, err := cmd.Output()
	if err != nil && !die {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "CHILD: ") {
			return strings.TrimPrefix(line, "CHILD: ")
		}
	}
	t.Fatalf("child said nothing: %v\n%s", err, out)
	return ""
}

func TestInUseAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if got := runChild(t, dir, false); got != "in use" {
		t.Fatalf("child opening a journal open here: %q, want in use", got)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := runChild(t, dir, false); got != "opened" {
		t.Fatalf("child opening a closed journal: %q", got)
	}
}

func TestSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	if got := runChild(t, dir, true); got != "written" {
		t.Fatalf("child: %q", got)
	}
	// The dead child's lock went with it.
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("check after SIGKILL: %+v", rep)
	if rep.Records != 1 || rep.Completions != 1 {
		t.Errorf("check after SIGKILL: %+v", rep)
	}
	j := openT(t, dir)
	out := scanAll(t, j, 0)
	if len(out) != 1 || out[0].r.Path != "from child" || !out[0].completed {
		t.Errorf("after SIGKILL: %+v", out)
	}
}

func TestMissingManifest(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir)
	if err := j.Append([]*checkpoint.Record{rec(1, "a")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	before := listFiles(t, dir)
	if _, err := Open(dir, "/backing", Options{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open without MANIFEST: %v, want ErrDamaged", err)
	}
	if _, err := Check(dir); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Check without MANIFEST: %v, want ErrDamaged", err)
	}
	after := listFiles(t, dir)
	if len(after) != len(before) {
		t.Errorf("files before %v, after %v", before, after)
	}

	// Nor is a directory of other files taken over.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o600)
	_, err := Open(other, "/backing", Options{})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of a directory of other files: %v", err)
	}
	t.Log(err)
}

func TestAppendLargerThanATransaction(t *testing.T) {
	j := openT(t, t.TempDir())
	const n = 60000 // badger allows about 25,000 entries per transaction here
	recs := make([]*checkpoint.Record, n)
	for i := range recs {
		recs[i] = rec(1, fmt.Sprintf("some/longer/path/%d", i))
	}
	before := j.Syncs()
	if err := j.Append(recs); err != nil {
		t.Fatal(err)
	}
	syncs := j.Syncs() - before
	t.Logf("one Append of %d records: %d syncs", n, syncs)
	if syncs < 2 {
		t.Errorf("%d syncs: the batch did not need splitting, make it larger", syncs)
	}
	if got := len(scanAll(t, j, 0)); got != n {
		t.Errorf("scanned %d records, want %d", got, n)
	}
}
