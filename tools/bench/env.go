package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Target is one of the filesystems a workload runs on.
type Target struct {
	Name    string // raw, loopback, hsmfs (or badger, which has no directory)
	Dir     string // where the workload works: the mountpoint, or BACKING for raw
	Backing string
	Mnt     string
	Journal string // hsmfs only
	Log     string // the daemon's log

	env     *Env
	proc    *exec.Cmd // loopback only
	pid     int       // the serving process
	memprof string    // hsmfs with --cpuprofile or heap: where SIGUSR1 writes a heap profile
	heap    bool      // hsmfs: write heap profiles even without --cpuprofile
	unmount *cleanupItem
	dead    error // the mount died and could not be brought back
}

// Env is the work directory, the filesystems and the mounts of one run.
type Env struct {
	cfg *config
	sz  sizes
	cl  *cleanups

	work   string
	backFS string // a directory on the BACKING filesystem
	jourFS string // a directory on the JOURNAL filesystem

	goBin, goroot, goVersion string
	hsmfsVersion             string

	targets map[string]*Target

	res            *Results
	intentsPerSync []float64

	mu    sync.Mutex
	procs map[int]string // every process we started that may still run
}

func (e *Env) target(name string) *Target {
	if t, ok := e.targets[name]; ok {
		return t
	}
	return &Target{Name: name, env: e}
}

// Setup makes the work directory, the optional loop filesystems, and
// mounts the loopback and hsmfs targets.
func (e *Env) Setup(ctx context.Context, mounts bool) error {
	e.procs = map[int]string{}
	if err := e.findTools(); err != nil {
		return err
	}
	if err := e.makeWork(); err != nil {
		return err
	}
	if err := e.makeFilesystems(ctx); err != nil {
		return err
	}
	lb, hs, err := e.makeTargets()
	if err != nil || !mounts {
		return err
	}
	if err := e.mountLoopback(ctx, lb); err != nil {
		return err
	}
	return e.mountHsmfs(ctx, hs)
}

// findTools finds the go command (for the build workload and the
// versions in the report), hsmfs and the loopback binary.
func (e *Env) findTools() error {
	var err error
	if e.goBin, err = exec.LookPath("go"); err != nil {
		if _, serr := os.Stat("/usr/local/go/bin/go"); serr == nil {
			e.goBin = "/usr/local/go/bin/go"
		} else {
			return fmt.Errorf("the go command is needed (build workload): %w", err)
		}
	}
	out, err := exec.Command(e.goBin, "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		return fmt.Errorf("go env: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return fmt.Errorf("go env: unexpected output %q", out)
	}
	e.goroot, e.goVersion = f[0], f[1]
	if v, err := exec.Command(e.cfg.hsmfsBin, "--version").CombinedOutput(); err == nil {
		e.hsmfsVersion = strings.TrimSpace(string(v))
	} else {
		return fmt.Errorf("%s --version: %v (build it: make build)", e.cfg.hsmfsBin, err)
	}
	if _, err := os.Stat(e.cfg.loopBin); err != nil {
		return fmt.Errorf("loopback binary: %w (go build -o bin/loopback github.com/hanwen/go-fuse/v2/example/loopback)", err)
	}
	return nil
}

// makeWork makes the work directory (--work, or a fresh one under the
// backing directory) and pushes its removal and the saving of the
// daemons' logs on the cleanup stack.
func (e *Env) makeWork() error {
	var err error
	if e.cfg.work != "" {
		e.work, err = filepath.Abs(e.cfg.work)
		if err == nil {
			err = os.MkdirAll(e.work, 0o755)
		}
		if err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(e.cfg.backingDir, 0o755); err != nil {
			return err
		}
		if e.work, err = os.MkdirTemp(e.cfg.backingDir, "hsmfs-bench."); err != nil {
			return err
		}
	}
	work := e.work
	// Last to run: keep the daemons' logs (OUT/logs/), then remove what
	// we made, never crossing into a mount that is somehow still there.
	e.cl.push("remove "+work, func() {
		if e.cfg.work != "" {
			ents, _ := os.ReadDir(work)
			for _, de := range ents {
				removeTree(filepath.Join(work, de.Name()))
			}
			return
		}
		removeTree(work)
	})
	e.cl.push("save logs", func() { e.saveLogs() })
	return nil
}

// makeFilesystems sets where the backing directories and the journal
// live: loop-mounted filesystems with --loop, directories of the work
// directory otherwise.
func (e *Env) makeFilesystems(ctx context.Context) error {
	var err error
	if e.cfg.loop {
		if e.backFS, err = e.loopFS(ctx, "backing", 24<<30); err != nil {
			return err
		}
		e.jourFS, err = e.loopFS(ctx, "journal", 8<<30)
		return err
	}
	e.backFS = filepath.Join(e.work, "data")
	e.jourFS = filepath.Join(e.work, "journals")
	for _, d := range []string{e.backFS, e.jourFS} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// makeTargets makes the three targets' directories and returns the two
// that need a mount.
func (e *Env) makeTargets() (lb, hs *Target, err error) {
	work := e.work
	e.targets = map[string]*Target{}
	raw := &Target{Name: "raw", Backing: filepath.Join(e.backFS, "raw"), env: e}
	raw.Dir = raw.Backing
	lb = &Target{Name: "loopback", Backing: filepath.Join(e.backFS, "loopback"), Mnt: filepath.Join(work, "mnt-loopback"), env: e}
	lb.Dir = lb.Mnt
	hs = &Target{Name: "hsmfs", Backing: filepath.Join(e.backFS, "hsmfs"), Mnt: filepath.Join(work, "mnt-hsmfs"),
		Journal: filepath.Join(e.jourFS, "hsmfs-journal"), env: e}
	hs.Dir = hs.Mnt
	for _, t := range []*Target{raw, lb, hs} {
		e.targets[t.Name] = t
		for _, d := range []string{t.Backing, t.Mnt} {
			if d != "" {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	return lb, hs, nil
}

func (e *Env) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "work directory %s\n", e.work)
	fmt.Fprintf(&b, "BACKING on %s; JOURNAL on %s", fsDesc(e.backFS), fsDesc(e.jourFS))
	if sameDev(e.backFS, e.jourFS) {
		b.WriteString(" (the same filesystem)")
	}
	fmt.Fprintf(&b, "\nhsmfs %s (%s), go-fuse example loopback (-directmount, 1s entry/attr timeouts), %s",
		e.hsmfsVersion, e.cfg.hsmfsBin, e.goVersion)
	if len(e.cfg.hsmfsArgs) > 0 {
		fmt.Fprintf(&b, "\nhsmfs mount arguments: %s", strings.Join(e.cfg.hsmfsArgs, " "))
	}
	return b.String()
}

// loopFS makes a sparse image file, a filesystem on it, and mounts it
// with -o loop (the loop device goes away with the unmount).
func (e *Env) loopFS(ctx context.Context, name string, size int64) (string, error) {
	imgDir := filepath.Join(e.work, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return "", err
	}
	img := filepath.Join(imgDir, name+".img")
	f, err := os.Create(img)
	if err != nil {
		return "", err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return "", err
	}
	var mkfs []string
	switch e.cfg.loopFS {
	case "xfs":
		mkfs = []string{"mkfs.xfs", "-q", "-f", img}
	default:
		// Enough inodes for a million paths; inode tables written now
		// rather than by a background thread during the measurements.
		mkfs = []string{"mkfs.ext4", "-q", "-F", "-N", "3000000", "-E", "lazy_itable_init=0,lazy_journal_init=0", img}
	}
	if out, err := exec.CommandContext(ctx, mkfs[0], mkfs[1:]...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(mkfs, " "), err, out)
	}
	dir := filepath.Join(e.work, "fs-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount -o loop %s: %v: %s", img, err, out)
	}
	e.cl.push("unmount "+dir, func() {
		if err := unmountPath(dir, 10*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		}
	})
	return dir, nil
}

// mountLoopback starts the go-fuse example loopback and waits for its
// "Mounted!".
func (e *Env) mountLoopback(ctx context.Context, t *Target) error {
	args := []string{"-directmount"}
	if e.cfg.cpuprof != "" {
		if err := os.MkdirAll(e.cfg.cpuprof, 0o755); err != nil {
			return err
		}
		args = append(args, "-cpuprofile", filepath.Join(e.cfg.cpuprof, "loopback-"+time.Now().Format("150405")+".prof"))
	}
	args = append(args, t.Mnt, t.Backing)
	t.Log = filepath.Join(e.work, "logs", "loopback.log")
	if err := os.MkdirAll(filepath.Dir(t.Log), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(t.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(e.cfg.loopBin, args...)
	cmd.Stderr = logf
	// Its own process group: a ^C reaches us, and we unmount it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start loopback: %w", err)
	}
	e.addProc(cmd.Process.Pid, "loopback")
	t.proc, t.pid = cmd, cmd.Process.Pid
	exited := make(chan struct{})
	t.unmount = e.cl.push("unmount "+t.Mnt, func() {
		err := unmountPath(t.Mnt, 10*time.Second)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if !ok && strings.Contains(sc.Text(), "Mounted!") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		cmd.Wait()
		e.delProc(cmd.Process.Pid)
		logf.Close()
		close(exited)
	}()
	select {
	case ok := <-ready:
		if !ok {
			return fmt.Errorf("loopback exited before mounting: %s", logTail(t.Log, 3))
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("loopback did not mount within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// mountHsmfs runs "hsmfs mount", which returns once the mount is live.
func (e *Env) mountHsmfs(ctx context.Context, t *Target) error {
	t.Log = filepath.Join(e.work, "logs", "hsmfs-"+filepath.Base(t.Mnt)+".log")
	if err := os.MkdirAll(filepath.Dir(t.Log), 0o755); err != nil {
		return err
	}
	args := append([]string{"mount", "--journal", t.Journal, "--log", t.Log}, e.cfg.hsmfsArgs...)
	args = append(args, t.Backing, t.Mnt)
	cmd := exec.CommandContext(ctx, e.cfg.hsmfsBin, args...)
	cmd.Env = os.Environ()
	if e.cfg.cpuprof != "" {
		if err := os.MkdirAll(e.cfg.cpuprof, 0o755); err != nil {
			return err
		}
		p := filepath.Join(e.cfg.cpuprof, "hsmfs-"+filepath.Base(t.Mnt)+"-"+time.Now().Format("150405")+".prof")
		cmd.Env = append(cmd.Env, "HSMFS_CPUPROFILE="+p)
		t.memprof = strings.TrimSuffix(p, ".prof") + "-heap.prof"
		cmd.Env = append(cmd.Env, "HSMFS_MEMPROFILE="+t.memprof)
	} else if t.heap {
		t.memprof = filepath.Join(e.work, "hsmfs-"+filepath.Base(t.Mnt)+"-heap.prof")
		cmd.Env = append(cmd.Env, "HSMFS_MEMPROFILE="+t.memprof)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("hsmfs mount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	st, err := hsmStatus(t.Mnt)
	if err != nil {
		unmountPath(t.Mnt, 5*time.Second)
		return err
	}
	if st.Pid > 0 {
		t.pid = st.Pid
		e.addProc(t.pid, "hsmfs")
	}
	pid := t.pid
	stopScrapes := scrapeMetrics(t, st)
	t.unmount = e.cl.push("unmount "+t.Mnt, func() {
		defer e.delProc(pid)
		stopScrapes()
		// hsmfs umount waits for the daemon to close its journal.
		c := exec.Command(e.cfg.hsmfsBin, "umount", t.Mnt)
		out, err := runTimeout(c, 120*time.Second)
		if err == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "cleanup: hsmfs umount %s: %v: %s; detaching\n", t.Mnt, err, strings.TrimSpace(string(out)))
		if err := unmountPath(t.Mnt, 5*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		}
		if pid > 0 && processAlive(pid) {
			time.Sleep(2 * time.Second)
			if processAlive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return nil
}

// saveLogs copies the daemons' logs to OUT/logs/, replacing those of the
// previous run.
func (e *Env) saveLogs() {
	src := filepath.Join(e.work, "logs")
	ents, err := os.ReadDir(src)
	if err != nil || len(ents) == 0 {
		return
	}
	dst := filepath.Join(e.cfg.out, "logs")
	os.RemoveAll(dst)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	for _, de := range ents {
		if b, err := os.ReadFile(filepath.Join(src, de.Name())); err == nil {
			os.WriteFile(filepath.Join(dst, de.Name()), b, 0o644)
		}
	}
}

// logTail gives the last n lines of a log, on one line.
func logTail(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return p + ": " + lastLines(string(b), n)
}

// alive reports whether a mounted target still answers.
func (t *Target) alive() error {
	if t.Mnt == "" {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(t.Mnt, &st); err != nil {
		return fmt.Errorf("%s mount %s: %w", t.Name, t.Mnt, err)
	}
	if !isMountpoint(t.Mnt) {
		return fmt.Errorf("%s: %s is no longer mounted", t.Name, t.Mnt)
	}
	if t.pid > 0 && !processAlive(t.pid) {
		return fmt.Errorf("%s: its process %d is gone", t.Name, t.pid)
	}
	return nil
}

// revive replaces a dead mount with a fresh one (same BACKING, and for
// hsmfs the same journal, which then recovers).
func (e *Env) revive(ctx context.Context, t *Target) error {
	if t.unmount != nil {
		t.unmount.run()
	}
	unmountPath(t.Mnt, 2*time.Second)
	switch t.Name {
	case "loopback":
		return e.mountLoopback(ctx, t)
	case "hsmfs":
		return e.mountHsmfs(ctx, t)
	}
	return nil
}

// settle ends a sample on hsmfs the way a consumer would: one query and
// a bless, so that every sample starts with nothing pending. Untimed.
func (t *Target) settle() error {
	if t.Name != "hsmfs" {
		return nil
	}
	if _, _, err := hsmQuery(t.Mnt); err != nil {
		return err
	}
	_, err := hsmBless(t.Mnt)
	return err
}

// procMem reads VmHWM (peak RSS) and VmRSS of pid, in bytes.
func procMem(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = v << 10
		case "VmRSS:":
			rss = v << 10
		}
	}
	return hwm, rss, nil
}

// dropCaches writes back dirty data, then drops the page, dentry and
// inode caches (all filesystems, FUSE ones included).
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop_caches: %w", err)
	}
	return nil
}

func (e *Env) addProc(pid int, what string) {
	e.mu.Lock()
	e.procs[pid] = what
	e.mu.Unlock()
}

func (e *Env) delProc(pid int) {
	e.mu.Lock()
	delete(e.procs, pid)
	e.mu.Unlock()
}

// forceCleanup is the last resort when the run does not unwind: detach
// every mount under the work directory and kill what we started.
func (e *Env) forceCleanup() {
	if e.work == "" {
		return
	}
	for _, m := range mountsUnder(e.work) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	e.mu.Lock()
	for pid := range e.procs {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	e.mu.Unlock()
}

// heapProfile asks an hsmfs daemon started with --cpuprofile for a heap
// profile (SIGUSR1) and keeps it under a name ending in -WHEN.prof.
func (t *Target) heapProfile(when string) string {
	if t.memprof == "" || t.pid <= 0 {
		return ""
	}
	os.Remove(t.memprof)
	if err := syscall.Kill(t.pid, syscall.SIGUSR1); err != nil {
		return ""
	}
	for i := 0; i < 100; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := os.Stat(t.memprof); err == nil {
			dst := strings.TrimSuffix(t.memprof, ".prof") + "-" + when + ".prof"
			if os.Rename(t.memprof, dst) != nil {
				return ""
			}
			fmt.Printf("  heap profile of hsmfs: %s\n", dst)
			return dst
		}
	}
	return ""
}
