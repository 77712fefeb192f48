package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// hsmfs export (docs/fleet.md) against a JetStream server embedded in the
// test binary: three mounts, each with its own exporter process, publish
// into one stream; a reader mirrors every mount from the stream alone.

const exportStream = "HSMFS"

// natsServer is an embedded nats-server with JetStream on disk. restart
// shuts it down and starts it again on the same port and store.
type natsServer struct {
	t    testing.TB
	opts *server.Options
	s    *server.Server
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	ns := &natsServer{t: t, opts: opts}
	ns.start()
	ns.opts.Port = ns.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	s, err := server.NewServer(ns.opts)
	if err != nil {
		ns.t.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		ns.t.Fatalf("nats-server did not start")
	}
	ns.s = s
}

func (ns *natsServer) stop() {
	if ns.s != nil {
		ns.s.Shutdown()
		ns.s.WaitForShutdown()
		ns.s = nil
	}
}

func (ns *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.opts.Port) }

// exporter is one `hsmfs export --every` process; its stderr goes to log.
type exporter struct {
	args []string
	log  string
	cmd  *exec.Cmd
	done chan error
}

func startExporter(t *testing.T, log string, args ...string) *exporter {
	t.Helper()
	e := &exporter{args: args, log: log}
	e.start(t)
	return e
}

func (e *exporter) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(e.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	defer f.Close()
	e.cmd = exec.Command(hsmfsBin, e.args...)
	e.cmd.Stdout, e.cmd.Stderr = f, f
	must(t, e.cmd.Start())
	e.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(e.cmd, e.done)
}

// kill SIGKILLs the exporter and waits for it.
func (e *exporter) kill() {
	e.cmd.Process.Kill()
	<-e.done
	e.cmd = nil
}

// stop sends SIGTERM and returns the exit status; an exporter stops at
// once (a round that was running is not blessed).
func (e *exporter) stop() error {
	if e.cmd == nil {
		return nil
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	defer func() { e.cmd = nil }()
	select {
	case err := <-e.done:
		return err
	case <-time.After(30 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
		return errors.New("exporter did not stop within 30s of SIGTERM")
	}
}

func (e *exporter) logText() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

// writer makes random modifications in fm until stop.
func (fm *fleetMount) writer(seed uint64, stop *atomic.Bool, wg *sync.WaitGroup) {
	defer wg.Done()
	rng := rand.New(rand.NewPCG(seed, 7))
	for !stop.Load() {
		fm.gate.RLock()
		if randomOpIn(fm.mnt, rng) {
			fm.mods.Add(1)
		}
		fm.gate.RUnlock()
		time.Sleep(time.Duration(1+rng.IntN(8)) * time.Millisecond)
	}
}

// waitExported waits until the mount's exporter has blessed a query
// that began after now: everything changed before is in the stream.
func waitExported(t *testing.T, fm *fleetMount) {
	t.Helper()
	last := num(t, status(t, fm.mnt), "last_query")
	deadline := time.Now().Add(90 * time.Second)
	for num(t, status(t, fm.mnt), "last_blessed") <= last {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no query after %d was blessed within 90s; exporter log:\n%s", fm.mnt, last, fm.exp.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExportFleet(t *testing.T) {
	ns := startNATS(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var fleet []*fleetMount
	for i := 0; i < 3; i++ {
		b, mnt, j := newDirs(t)
		fm := &fleetMount{backing: b, mnt: mnt, journal: j, dest: filepath.Join(filepath.Dir(b), "dest"), pending: map[string]pendingPath{}}
		must(t, os.Mkdir(fm.dest, 0o755))
		fm.m = mount(t, withBacking(b), withMnt(mnt), withJournal(j))
		fleet = append(fleet, fm)
	}
	// The first export creates the stream; the answer is empty.
	r := hsm(t, "export", "--nats", ns.url(), "--stream", exportStream, "--create-stream", "--max-bytes", "256M", fleet[0].mnt)
	if r.code != 0 || !strings.Contains(r.stderr, "0 messages acknowledged") {
		t.Fatalf("first export: %v", r)
	}
	reader := newMirrorReader(t, ns.url(), fleet)

	var stop, readerStop atomic.Bool
	var wg, rwg sync.WaitGroup
	stopAll := func() {
		stop.Store(true)
		wg.Wait()
		readerStop.Store(true)
		rwg.Wait()
		for _, fm := range fleet {
			if fm.exp != nil {
				fm.exp.stop()
			}
		}
	}
	t.Cleanup(stopAll)
	for i, fm := range fleet {
		fm.exp = startExporter(t, filepath.Join(filepath.Dir(fm.dest), "export.log"),
			"export", "--every", "200ms", "--timeout", "10s", "--nats", ns.url(), "--stream", exportStream, fm.mnt)
		wg.Add(1)
		go fm.writer(seed+uint64(i), &stop, &wg)
	}
	var readErrs atomic.Int64
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for !readerStop.Load() {
			if _, err := reader.step(300 * time.Millisecond); err != nil {
				readErrs.Add(1)
				time.Sleep(100 * time.Millisecond) // the server is away
			}
		}
	}()

	time.Sleep(1500 * time.Millisecond)
	t.Log("SIGKILL exporter 0, start it again")
	fleet[0].exp.kill()
	fleet[0].exp.start(t)

	time.Sleep(1500 * time.Millisecond)
	t.Log("restart the NATS server")
	ns.stop()
	time.Sleep(500 * time.Millisecond)
	ns.start()

	time.Sleep(1500 * time.Millisecond)
	t.Log("SIGKILL mount 2's daemon, mount again; its exporter keeps running")
	crashed := fleet[2]
	crashed.m.unmounted = true
	must(t, syscall.Kill(crashed.m.Pid, syscall.SIGKILL))
	for i := 0; alive(crashed.m.Pid); i++ {
		if i > 3000 {
			t.Fatalf("daemon %d did not die", crashed.m.Pid)
		}
		time.Sleep(time.Millisecond)
	}
	crashed.gate.Lock()
	forceUnmount(t, crashed.mnt, 0)
	time.Sleep(400 * time.Millisecond) // rounds fail meanwhile: not an hsmfs mount
	crashed.m = mount(t, withBacking(crashed.backing), withMnt(crashed.mnt), withJournal(crashed.journal))
	crashed.gate.Unlock()
	t.Cleanup(stopAll) // before the new mount's cleanup unmounts it

	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	for _, fm := range fleet {
		waitClosed(t, fm.mnt)
	}
	for _, fm := range fleet {
		waitExported(t, fm)
	}
	readerStop.Store(true)
	rwg.Wait()

	// Drain: every message the stream holds is handled, every whole
	// answer copied.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := reader.step(500 * time.Millisecond)
		info, ierr := reader.cons.Info(context.Background())
		if err == nil && ierr == nil && n == 0 && info.NumPending == 0 && info.NumAckPending == 0 && len(reader.pendingMounts()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, fm := range reader.pendingMounts() {
				t.Logf("%s: pending %v", fm.mnt, fm.pending)
				fm.logHistory(t, slices.Collect(maps.Keys(fm.pending)))
			}
			t.Fatalf("reader not drained after 60s: fetch %v, info %v, %d mounts with pending paths", err, ierr, len(reader.pendingMounts()))
		}
		reader.copyAll()
	}
	for i, fm := range fleet {
		if err := fm.exp.stop(); err != nil {
			t.Errorf("exporter %d: SIGTERM: %v; log:\n%s", i, err, fm.exp.logText())
		}
	}
	t.Logf("reader: %d messages (%d repeats), %d whole answers, %d left incomplete (rounds cut short), %d rsyncs (%d failed and were retried), %d paths copied whole, %d fetch errors",
		reader.msgs, reader.repeats, reader.answers, len(reader.open), reader.rsyncs, reader.rsyncFails, reader.wholeCopies, readErrs.Load())
	for i, fm := range fleet {
		want, got := snapshot(t, fm.mnt, snapOpts{}), snapshot(t, fm.dest, snapOpts{})
		t.Logf("mount %d: %d modifications, %d paths", i, fm.mods.Load(), len(want))
		if !sameTree(t, fmt.Sprintf("mount %d: mirror from the stream vs mount", i), want, got, "mount", "mirror") {
			t.Logf("exporter %d log:\n%s", i, fm.exp.logText())
			var differ []string
			for _, m := range []map[string]node{want, got} {
				for p := range m {
					if w, ok := want[p]; !ok || w != got[p] {
						differ = append(differ, p)
					}
				}
			}
			fm.logHistory(t, differ)
		}
		if fm.mods.Load() == 0 {
			t.Errorf("mount %d: the writers made no modification", i)
		}
	}
	if reader.answers == 0 {
		t.Errorf("the reader got no whole answer")
	}
	if log := crashed.exp.logText(); !strings.Contains(log, "round failed, will retry") || !strings.Contains(log, "rounds succeed again") {
		t.Errorf("the crashed mount's exporter should have failed rounds, then succeeded; its log:\n%s", log)
	}
}

// TestExportRefusals: a refused or failed export blesses nothing, with a
// one-line reason and exit 1; a bad command line exits 2.
func TestExportRefusals(t *testing.T) {
	ns := startNATS(t)
	m := mount(t)
	must(t, os.WriteFile(filepath.Join(m.Mnt, "keep.txt"), []byte("x"), 0o644))
	waitClosed(t, m.Mnt)
	blessed := num(t, status(t, m.Mnt), "last_blessed")
	url := ns.url()
	for _, args := range [][]string{
		{"--stream", "S", m.Mnt},
		{"--nats", url, m.Mnt},
		{"--nats", url, "--stream", "S"},
		{"--nats", url, "--stream", "S", "--every", "soon", m.Mnt},
		{"--nats", url, "--stream", "S", "--consumer", "a/b", m.Mnt},
		{"--nats", url, "--stream", "S", "--subject", "a.>", m.Mnt},
		{"--nats", url, "--stream", "S", "--max-bytes", "lots", m.Mnt},
		{"--nats", url, "--stream", "S", m.Mnt, "extra"},
	} {
		if r := hsm(t, append([]string{"export"}, args...)...); r.code != 2 {
			t.Errorf("export %q: %v, want exit 2", args, r)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats", url, "--stream", exportStream, m.Mnt}, "--create-stream"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--stream", exportStream, m.Mnt}, "cannot reach"},
		{[]string{"--nats", url, "--stream", exportStream, "--create-stream", t.TempDir()}, "not an hsmfs mount"},
		{[]string{"--nats", url, "--stream", exportStream, "--creds", "/nonexistent.creds", m.Mnt}, "nonexistent.creds"},
	} {
		r := hsm(t, append([]string{"export"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("export %q: %v, want exit 1 and one line naming %q", c.args, r, c.want)
		}
	}
	if got := num(t, status(t, m.Mnt), "last_blessed"); got != blessed {
		t.Fatalf("a refused export blessed: last_blessed %d -> %d", blessed, got)
	}
	// The change is still listed; a successful export takes it.
	if p := plain(t, m.Mnt); len(p) != 1 || p[0] != "keep.txt" {
		t.Fatalf("after the refusals the answer is %q, want keep.txt", p)
	}
	r := hsm(t, "export", "--nats", url, "--stream", exportStream, "--create-stream", "--max-age", "1h", m.Mnt)
	if r.code != 0 || !strings.Contains(r.stderr, "1 message acknowledged") || !strings.Contains(r.stderr, "warning: ") {
		t.Fatalf("export: %v (want one message and a warning about --max-age)", r)
	}
	if p := plain(t, m.Mnt); len(p) != 0 {
		t.Errorf("after the export the answer is %q, want nothing", p)
	}
	// A named consumer exports on its own cursor: the default still has
	// the change pending afterwards, and an unknown consumer is refused.
	if r := hsm(t, "export", "--nats", url, "--stream", exportStream, "--consumer", "nobody", m.Mnt); r.code != 1 {
		t.Errorf("export of an unknown consumer: %v, want exit 1", r)
	}
	if r := hsm(t, "consumer", "add", m.Mnt, "fleet"); r.code != 0 {
		t.Fatalf("consumer add: %v", r)
	}
	must(t, os.WriteFile(filepath.Join(m.Mnt, "named.txt"), []byte("y"), 0o644))
	waitClosed(t, m.Mnt)
	for i := 0; i < 2; i++ { // the first answer says full; both are exported and blessed
		if r := hsm(t, "export", "--nats", url, "--stream", exportStream, "--consumer", "fleet", m.Mnt); r.code != 0 {
			t.Fatalf("export --consumer fleet: %v", r)
		}
	}
	if cs := consumerList(t, m.Mnt); cs["fleet"]["pending_paths"].(float64) != 0 || cs["default"]["pending_paths"].(float64) == 0 {
		t.Errorf("after exporting the named consumer: %v, want fleet with nothing pending and the default with named.txt", cs)
	}
	// --every: stopped by SIGTERM, exit 0.
	e := startExporter(t, filepath.Join(t.TempDir(), "export.log"), "export", "--every", "100ms", "--nats", url, "--stream", exportStream, m.Mnt)
	time.Sleep(500 * time.Millisecond)
	if err := e.stop(); err != nil {
		t.Errorf("exporter stopped by SIGTERM: %v; log:\n%s", err, e.logText())
	}
}
