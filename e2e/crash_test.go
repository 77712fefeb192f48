package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The crash harness (docs/design.md, "What a crash leaves"). Random
// writers run against the mount while a consumer loops query → rsync →
// bless; the daemon is killed (kill mode) or both filesystems lose power
// (power mode, crash_power_test.go) at random points, and hsmfs is mounted
// again. At the end the consumer's copy must equal the mount.
//
// Short forms run in `make test`; `make crashtest` sets HSMFS_CRASH_LONG=1
// (and HSMFS_CRASHES / HSMFS_POWERCUTS may set the counts).

// crashCount is how many crashes a crash test runs.
func crashCount(t *testing.T, env string, short, long int) int {
	n := short
	if os.Getenv("HSMFS_CRASH_LONG") != "" {
		n = long
	}
	return envInt(t, env, n)
}

func crashSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HSMFS_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HSMFS_CRASH_SEED=%q: %v", s, err)
		}
		seed = v
	}
	return seed
}

// crashRig is one mount under crash testing.
type crashRig struct {
	t       *testing.T
	backing string
	mnt     string
	journal string
	dest    string
	mountFn func() *hsmMount // mounts hsmfs on the rig's dirs

	// gate: writers and the consumer hold it shared per operation; a
	// crash takes it exclusively after the kill, so that nothing acts
	// on the bare mountpoint while hsmfs is down.
	gate sync.RWMutex
	m    *hsmMount

	mods      atomic.Int64 // modifications that succeeded
	rounds    atomic.Int64 // consumer rounds completed (blessed)
	failedRnd atomic.Int64 // consumer rounds cut short by a crash
	stop      atomic.Bool
	quiet     atomic.Bool // writers pause: half the rounds run on a still tree
	errs      chan error

	outRng   *rand.Rand // for the changes made while hsmfs is down (remount)
	slowDest string     // the mirror of the named consumer "slow"

	histMu   sync.Mutex // guards hist and slowHist
	hist     []string   // every answer the consumer got, for explain
	slowHist []string   // the slow consumer's rounds: its answers and blesses
}

// explain logs, for a failed comparison, which answers listed the paths
// that differ and what the journal holds for them.
// rsyncTempName is the name of rsync's temporary file beside a file it
// writes.
var rsyncTempName = regexp.MustCompile(`^\.(.+)\.[A-Za-z0-9]{6}$`)

func (r *crashRig) explain(diff []string) {
	t := r.t
	r.histMu.Lock()
	hist := r.hist
	r.histMu.Unlock()
	for _, d := range diff {
		p := strings.SplitN(d, `"`, 3)[1]
		var in []int
		for i, a := range hist {
			for _, l := range strings.Split(a, "\n") {
				if l == p {
					in = append(in, i)
				}
			}
		}
		t.Logf("%q: listed in answers %v of %d", p, in, len(hist))
		if strings.Contains(d, "only in copy") && rsyncTempName.MatchString(filepath.Base(p)) {
			t.Logf("%q looks like a temporary file that rsync left in DEST (.NAME.XXXXXX); no answer lists such a name", p)
		}
	}
	r.m.unmount(t)
	res := hsm(t, "journal", "dump", r.journal)
	// The records that name a path that differs (or a parent of one),
	// and the state; HSMFS_DEBUG_KEEP_BLESSED=1 keeps blessed ones too.
	var keep []string
	for _, l := range strings.Split(res.stdout, "\n") {
		for _, d := range diff {
			p := strings.SplitN(d, `"`, 3)[1]
			if strings.Contains(l, p) || strings.Contains(l, filepath.Dir(p)) || strings.HasPrefix(l, "state:") {
				keep = append(keep, l)
				break
			}
		}
	}
	t.Logf("journal dump (%d bytes), the lines that name those paths or their directories:\n%s\n%s", len(res.stdout), strings.Join(keep, "\n"), res.stderr)
}

func newCrashRig(t *testing.T, backing, mnt, journal string) *crashRig {
	r := &crashRig{t: t, backing: backing, mnt: mnt, journal: journal,
		dest: filepath.Join(t.TempDir(), "dest"), slowDest: filepath.Join(t.TempDir(), "slow"), errs: make(chan error, 16)}
	r.mountFn = func() *hsmMount {
		return mount(t, withBacking(backing), withMnt(mnt), withJournal(journal))
	}
	for _, d := range []string{r.dest, r.slowDest} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// writer makes random modifications until stopped. Errors are expected
// while hsmfs is down; only successes are counted.
func (r *crashRig) writer(id int, rng *rand.Rand, wg *sync.WaitGroup) {
	defer wg.Done()
	for !r.stop.Load() {
		if r.quiet.Load() {
			time.Sleep(time.Millisecond)
			continue
		}
		r.gate.RLock()
		if r.randomOp(id, rng) {
			r.mods.Add(1)
		}
		r.gate.RUnlock()
		switch {
		case rng.IntN(60) == 0:
			// A lull, so that the consumer's rsync sometimes runs on a
			// quiet tree and its round gets blessed.
			time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
		case rng.IntN(4) == 0:
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		}
	}
}

// randomPath picks a path in a small namespace, so that operations
// collide: up to two directory levels of d0..d3, names f0..f7.
func randomPath(rng *rand.Rand, leaf bool) string {
	var parts []string
	for depth := rng.IntN(3); depth > 0; depth-- {
		parts = append(parts, fmt.Sprintf("d%d", rng.IntN(4)))
	}
	if leaf || len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("f%d", rng.IntN(8)))
	}
	return filepath.Join(parts...)
}

func randomContent(rng *rand.Rand) []byte {
	b := make([]byte, rng.IntN(3)*4096+rng.IntN(5000))
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return b
}

func (r *crashRig) randomOp(id int, rng *rand.Rand) bool { return randomOpIn(r.mnt, rng) }

// randomOpIn makes one random modification beneath root (files, links,
// renames of files and directories, removals, chmod, xattrs, mmap
// writes) and reports whether it succeeded.
func randomOpIn(root string, rng *rand.Rand) bool {
	abs := func(p string) string { return filepath.Join(root, p) }
	p := abs(randomPath(rng, true))
	switch rng.IntN(16) {
	case 0, 1:
		return os.WriteFile(p, randomContent(rng), 0o644) == nil
	case 2:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return false
		}
		_, err = f.Write(randomContent(rng))
		if rng.IntN(2) == 0 && err == nil {
			err = f.Sync()
		}
		return f.Close() == nil && err == nil
	case 3:
		return os.Truncate(p, int64(rng.IntN(6000))) == nil
	case 4:
		return os.MkdirAll(abs(randomPath(rng, false)), 0o755) == nil
	case 5:
		return os.Rename(p, abs(randomPath(rng, true))) == nil
	case 6: // whole directories
		return os.Rename(abs(randomPath(rng, false)), abs(randomPath(rng, false))) == nil
	case 7:
		return os.Remove(p) == nil
	case 8:
		if rng.IntN(4) == 0 {
			return os.RemoveAll(abs(randomPath(rng, false))) == nil
		}
		return os.Remove(abs(randomPath(rng, false))) == nil
	case 9:
		return os.Symlink(randomPath(rng, true), p) == nil
	case 10:
		return os.Chmod(p, os.FileMode(0o600+rng.IntN(0o200))) == nil
	case 11:
		return os.Link(p, abs(randomPath(rng, true))) == nil
	case 12:
		return mmapWrite(p, rng) == nil
	case 13:
		return syscall.Setxattr(p, "user.crash", []byte(strconv.Itoa(rng.IntN(1000))), 0) == nil
	default:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return false
		}
		_, err = f.WriteAt(randomContent(rng), int64(rng.IntN(8192)))
		if err == nil {
			err = f.Sync()
		}
		return f.Close() == nil && err == nil
	}
}

// consumer loops query → rsync → bless until stopped.
func (r *crashRig) consumer(wg *sync.WaitGroup) {
	defer wg.Done()
	for n := 0; !r.stop.Load(); n++ {
		// Under heavy churn rsync rarely gets through a round (a
		// directory turns into a file while it copies), so every other
		// round the writers pause and the bless path gets exercised;
		// crashes still come at any time.
		r.quiet.Store(n%2 == 0)
		r.gate.RLock()
		err := r.round()
		r.gate.RUnlock()
		r.quiet.Store(false)
		if err != nil {
			if r.failedRnd.Add(1) <= 20 {
				r.t.Logf("consumer round cut short: %.300s", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// slowConsumer is a second consumer, named, at its own slower pace, with
// its own mirror: both mirrors must end exact.
func (r *crashRig) slowConsumer(wg *sync.WaitGroup, rng *rand.Rand) {
	defer wg.Done()
	for !r.stop.Load() {
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		r.gate.RLock()
		err := r.slowRound()
		r.gate.RUnlock()
		if err != nil && r.failedRnd.Add(1) <= 20 {
			r.t.Logf("slow consumer round cut short: %.300s", err)
		}
	}
}

// slowRound is a round of the named consumer "slow": its answer (JSON,
// for the header), a whole copy when the answer says full, else the
// recipe; then bless of that query id.
func (r *crashRig) slowRound() error {
	dir := filepath.Join(r.mnt, ".hsm", "consumers", "slow")
	data, err := os.ReadFile(filepath.Join(dir, "changes.json"))
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	hdr, paths, err := parseJSONAnswer(data)
	if err != nil {
		return err
	}
	r.histMu.Lock()
	r.slowHist = append(r.slowHist, fmt.Sprintf("query %d (full %v): %q", hdr.Query, hdr.Full, paths))
	r.histMu.Unlock()
	// -I: after a power cut a file can keep its size and mtime and lose
	// its data; the quick check would keep the copy's old data.
	scratch, err := freshScratch(r.slowDest)
	if err != nil {
		return err
	}
	args := []string{"-a", "-I", "--temp-dir=" + scratch, "--delete", "--exclude=/.hsm", r.mnt + "/", r.slowDest + "/"}
	if !hdr.Full {
		lf := filepath.Join(filepath.Dir(r.slowDest), "slow-list")
		if err := os.WriteFile(lf, []byte(strings.Join(paths, "\x00")), 0o644); err != nil {
			return err
		}
		args = []string{"-a", "-I", "--temp-dir=" + scratch, "--from0", "--files-from=" + lf, "--delete-missing-args", "--force", r.mnt + "/", r.slowDest + "/"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rsync", args...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 24) {
		return fmt.Errorf("rsync: %v: %s", err, out)
	}
	cmd := fmt.Sprintf("bless %d\n", hdr.Query)
	if hdr.Full {
		cmd = fmt.Sprintf("bless %d full\n", hdr.Query) // the whole tree was copied
	}
	if err := os.WriteFile(filepath.Join(dir, "ctl"), []byte(cmd), 0); err != nil {
		return fmt.Errorf("bless: %w", err)
	}
	r.histMu.Lock()
	r.slowHist = append(r.slowHist, fmt.Sprintf("blessed %d", hdr.Query))
	r.histMu.Unlock()
	return nil
}

// parseJSONAnswer gives a changes.json answer's header and the paths
// that rsync takes (not shadowed).
func parseJSONAnswer(data []byte) (hdr struct {
	Query uint64 `json:"query"`
	Full  bool   `json:"full"`
}, paths []string, err error) {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if err = json.Unmarshal([]byte(lines[0]), &hdr); err != nil {
		return hdr, nil, fmt.Errorf("query: header %q: %w", lines[0], err)
	}
	for _, l := range lines[1:] {
		var e struct {
			Path     string `json:"path"`
			Shadowed bool   `json:"shadowed"`
		}
		if err = json.Unmarshal([]byte(l), &e); err != nil {
			return hdr, nil, fmt.Errorf("query: line %q: %w", l, err)
		}
		if !e.Shadowed {
			paths = append(paths, e.Path)
		}
	}
	return hdr, paths, nil
}

// freshScratch empties and returns the directory beside dest where the
// consumers' rsync writes its temporary files (--temp-dir, as
// docs/usage.md advises). rsync 3.4 and later abort a --files-from copy
// (exit 2, "invalid path from sender") when the tree changes under them,
// and the receiver, signalled between creating ".NAME.XXXXXX" and
// registering it for removal, can leave it behind (strace showed it,
// about once in 70 such aborts); in DEST no answer would ever list it.
func freshScratch(dest string) (string, error) {
	scratch := dest + ".tmp"
	if err := os.RemoveAll(scratch); err != nil {
		return "", err
	}
	return scratch, os.Mkdir(scratch, 0o700)
}

// round is one consumer round: the contract's recipe, bless only after
// rsync succeeded (24, "some files vanished", is success here: a file
// deleted while rsync ran was deleted in a later period, which the next
// round lists).
func (r *crashRig) round() error {
	data, err := os.ReadFile(filepath.Join(r.mnt, ".hsm", "changes"))
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	r.histMu.Lock()
	r.hist = append(r.hist, string(data))
	r.histMu.Unlock()
	lf := filepath.Join(filepath.Dir(r.dest), "list")
	if err := os.WriteFile(lf, data, 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scratch, err := freshScratch(r.dest)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "rsync", "-a", "-I", "--temp-dir="+scratch, "--files-from="+lf, "--delete-missing-args", "--force", r.mnt+"/", r.dest+"/")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 24) {
		return fmt.Errorf("rsync: %v: %s", err, out)
	}
	// The consumer is the only one querying: bless = its latest query.
	if err := ctl(r.mnt, "bless"); err != nil {
		return fmt.Errorf("bless: %w", err)
	}
	r.rounds.Add(1)
	return nil
}

// kill SIGKILLs the daemon, then remounts once writers and the consumer
// let go of the dead mount.
func (r *crashRig) kill() {
	t := r.t
	r.m.unmounted = true // its cleanup must not try a clean unmount
	if err := syscall.Kill(r.m.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill daemon %d: %v", r.m.Pid, err)
	}
	r.remount(nil)
}

// remount waits for the dead daemon, takes the gate, unmounts what is
// left, calls between (power mode remounts the filesystems there) and
// mounts hsmfs again. The first mount after the crash must say
// recovered.
func (r *crashRig) remount(between func()) {
	t := r.t
	waitDead(t, r.m.Pid)
	r.gate.Lock()
	defer r.gate.Unlock()
	forceUnmount(t, r.mnt, 0)
	if between != nil {
		between()
	}
	// While no hsmfs runs, changes straight in BACKING: the check at
	// mount must find them.
	outsideOps(t, r.backing, r.outRng, 20)
	r.m = r.mountFn()
	if st := status(t, r.mnt); st["recovered"] != true {
		t.Errorf("first mount after a crash: status says recovered %v, want true", st["recovered"])
	}
}

// waitDead waits up to 3 s for a killed daemon to be gone.
func waitDead(t testing.TB, pid int) {
	t.Helper()
	for i := 0; alive(pid); i++ {
		if i > 3000 {
			t.Fatalf("daemon %d did not die", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// run drives writers and the consumer, crashing n times with crash, then
// checks that the consumer's copy equals the mount.
func (r *crashRig) run(mode string, n int, seed uint64, crash func()) {
	t := r.t
	t.Logf("%s mode: seed %d (replay: HSMFS_CRASH_SEED=%d), %d crashes", mode, seed, seed, n)
	rng := rand.New(rand.NewPCG(seed, 1))
	r.outRng = rand.New(rand.NewPCG(seed, 99))
	r.m = r.mountFn()
	// Start from a blessed journal and an exact (empty) copy; the slow
	// consumer starts with a whole copy, as its first answer says.
	query(t, r.mnt)
	bless(t, r.mnt)
	if res := hsm(t, "consumer", "add", r.mnt, "slow"); res.code != 0 {
		t.Fatalf("hsmfs consumer add: %v", res)
	}
	var wg sync.WaitGroup
	// If the test fails half-way, the writers must stop before the
	// mounts are cleaned up, or they write into the bare mountpoint.
	t.Cleanup(func() { r.stop.Store(true); wg.Wait() })
	const writers = 3
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go r.writer(i, rand.New(rand.NewPCG(seed, uint64(i+2))), &wg)
	}
	wg.Add(2)
	go r.consumer(&wg)
	go r.slowConsumer(&wg, rand.New(rand.NewPCG(seed, 77)))
	for c := 0; c < n; c++ {
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		crash()
	}
	time.Sleep(200 * time.Millisecond)
	r.stop.Store(true)
	wg.Wait()

	// Quiesce: no crash, no writer; one more round brings DEST up to date.
	waitClosed(t, r.mnt)
	var err error
	for i := 0; i < 3; i++ {
		if err = r.round(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("final consumer round: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err = r.slowRound(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("final round of the slow consumer: %v", err)
	}
	if sdiff := treeDiff(snapshot(t, r.mnt, snapOpts{}), snapshot(t, r.slowDest, snapOpts{}), "mount", "slow copy"); len(sdiff) > 0 {
		t.Errorf("%s: the slow consumer's copy differs from the mount in %d paths:\n  %s", mode, len(sdiff), strings.Join(sdiff, "\n  "))
		r.histMu.Lock()
		t.Logf("the slow consumer's rounds:\n  %s", strings.Join(r.slowHist, "\n  "))
		r.histMu.Unlock()
		r.explain(sdiff)
		return
	}
	got, want := snapshot(t, r.dest, snapOpts{}), snapshot(t, r.mnt, snapOpts{})
	diff := treeDiff(want, got, "mount", "copy")
	t.Logf("%s mode: %d consumer rounds blessed (%d cut short), %d crashes, %d modifications, %d paths differed",
		mode, r.rounds.Load(), r.failedRnd.Load(), n, r.mods.Load(), len(diff))
	if !sameTree(t, mode+": copy vs mount", want, got, "mount", "copy") {
		r.explain(diff)
	}
	if r.mods.Load() == 0 || r.rounds.Load() == 0 {
		t.Errorf("%s mode did nothing: %d modifications, %d rounds", mode, r.mods.Load(), r.rounds.Load())
	}
}

// TestCrashKill is kill mode: SIGKILL of the daemon at random points.
func TestCrashKill(t *testing.T) {
	n := crashCount(t, "HSMFS_CRASHES", 6, 100)
	b, mnt, j := newDirs(t)
	r := newCrashRig(t, b, mnt, j)
	r.run("kill", n, crashSeed(t), r.kill)
}

// TestCrashKillInPlace is kill mode with the mount over BACKING itself.
func TestCrashKillInPlace(t *testing.T) {
	n := crashCount(t, "HSMFS_CRASHES", 6, 100)
	b, _, j := newDirs(t)
	r := newCrashRig(t, b, b, j)
	r.run("kill in place", n, crashSeed(t), r.kill)
}

// mmapWrite writes through a shared mapping. A fault (the mount died
// under the mapping) becomes an error instead of killing the test.
func mmapWrite(p string, rng *rand.Rand) (err error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	const size = 16384
	if err := f.Truncate(size); err != nil {
		return err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return err
	}
	defer syscall.Munmap(mem)
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("mmap fault: %v", v)
		}
	}()
	off := rng.IntN(size - 100)
	for i := 0; i < 100; i++ {
		mem[off+i] = byte('A' + rng.IntN(26))
	}
	if rng.IntN(2) == 0 {
		_, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&mem[0])), size, syscall.MS_SYNC)
		if e != 0 {
			return e
		}
	}
	return nil
}
