package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hsmfs/hsmfs/internal/natsexport"
)

// natsNode is one nats-server process of a JetStream cluster.
type natsNode struct {
	name, conf, log string
	port            int
	cmd             *exec.Cmd
	done            chan error
}

var (
	natsBinOnce sync.Once
	natsBin     string
	natsBinErr  error
)

// natsServerBin builds nats-server from the module's own dependency,
// once per run.
func natsServerBin(t *testing.T) string {
	natsBinOnce.Do(func() {
		natsBin = filepath.Join(tmpRoot, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			natsBinErr = fmt.Errorf("go build nats-server: %v: %s", err, out)
		}
	})
	if natsBinErr != nil {
		t.Fatal(natsBinErr)
	}
	return natsBin
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNATSCluster starts three nats-server processes as one JetStream
// cluster, and waits until it has a meta leader.
func startNATSCluster(t *testing.T) []*natsNode {
	natsServerBin(t)
	dir := t.TempDir()
	var nodes []*natsNode
	var routes []string
	cports := make([]int, 3)
	for i := range 3 {
		cports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[i]))
	}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), port: freePort(t), log: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1))}
		n.conf = filepath.Join(dir, n.name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q, max_file_store: 2G, max_memory_store: 64M }
cluster { name: hsmfs-test, listen: 127.0.0.1:%d, routes: [%s] }
`, n.name, n.port, filepath.Join(dir, n.name), cports[i], strings.Join(routes, ", "))
		must(t, os.WriteFile(n.conf, []byte(conf), 0o644))
		n.start(t)
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	waitJetStream(t, natsURLs(nodes))
	return nodes
}

func (n *natsNode) start(t *testing.T) {
	f, err := os.OpenFile(n.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	defer f.Close()
	n.cmd = exec.Command(natsBin, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	must(t, n.cmd.Start())
	n.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(n.cmd, n.done)
}

func (n *natsNode) kill() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

func natsURLs(nodes []*natsNode) string {
	var u []string
	for _, n := range nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(u, ",")
}

// waitJetStream waits until the cluster answers JetStream requests.
func waitJetStream(t *testing.T, urls string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		nc, err := nats.Connect(urls)
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster has no JetStream after 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFleetCluster is the fleet on a three-node JetStream cluster with an
// R3 stream: six mounts with writers, each with an exporter, and two
// followers keeping mirrors of two of them. During the run one NATS node
// is SIGKILLed and started again, one exporter and one follower are
// SIGKILLed and started again, and one mount's daemon is SIGKILLed and
// the mount made again. At the end every mirror equals its mount, every
// mount's last query is exported, and no follower has a message left
// unacknowledged.
func TestFleetCluster(t *testing.T) {
	nodes := startNATSCluster(t)
	urls := natsURLs(nodes)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	host, err := os.Hostname()
	must(t, err)

	const mounts = 6
	var fleet []*fleetMount
	for range mounts {
		b, mnt, j := newDirs(t)
		fm := &fleetMount{backing: b, mnt: mnt, journal: j, dest: filepath.Join(filepath.Dir(b), "dest")}
		must(t, os.Mkdir(fm.dest, 0o755))
		fm.m = mount(t, withBacking(b), withMnt(mnt), withJournal(j))
		fleet = append(fleet, fm)
	}
	if r := hsm(t, "export", "--nats", urls, "--stream", exportStream, "--create-stream", "--replicas", "3",
		"--max-bytes", "512M", fleet[0].mnt); r.code != 0 {
		t.Fatalf("first export (creates the R3 stream): %v", r)
	}
	followers := make([]*exporter, 2)
	durable := func(i int) string { return fmt.Sprintf("cluster-follow-%d", i) }
	var stop atomic.Bool
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop.Store(true)
		wg.Wait()
		for _, fm := range fleet {
			if fm.exp != nil {
				fm.exp.stop()
			}
		}
		for _, f := range followers {
			if f != nil {
				f.stop()
			}
		}
	})
	for i, fm := range fleet {
		dir := filepath.Dir(fm.dest)
		fm.exp = startExporter(t, filepath.Join(dir, "export.log"),
			"export", "--every", "300ms", "--timeout", "20s", "--nats", urls, "--stream", exportStream, fm.mnt)
		if i < len(followers) {
			filter := natsexport.Subject(natsexport.DefaultSubjectPrefix, host, fm.mnt, natsexport.DefaultConsumer)
			followers[i] = startExporter(t, filepath.Join(dir, "follow.log"), "follow", "--every", "400ms",
				"--nats", urls, "--stream", exportStream, "--durable", durable(i), "--filter", filter, fm.mnt, fm.dest)
		}
		wg.Add(1)
		go fm.writer(seed+uint64(i), &stop, &wg)
	}

	time.Sleep(2 * time.Second)
	t.Log("SIGKILL NATS node n3")
	nodes[2].kill()
	time.Sleep(1500 * time.Millisecond)
	t.Log("SIGKILL exporter 2 and follower 0")
	fleet[2].exp.kill()
	followers[0].kill()
	fleet[2].exp.start(t)
	followers[0].start(t)
	t.Log("SIGKILL the daemon of mount 3, mount it again")
	crashMount(t, fleet[3])
	time.Sleep(1500 * time.Millisecond)
	t.Log("start NATS node n3 again")
	nodes[2].start(t)
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()

	for _, fm := range fleet {
		waitClosed(t, fm.mnt)
	}
	// On a failure from here on, every exporter and follower shows where
	// it is (a Go program prints its goroutines on SIGQUIT).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		procs := append([]*exporter{}, followers...)
		for _, fm := range fleet {
			procs = append(procs, fm.exp)
		}
		for _, p := range procs {
			if p != nil && p.cmd != nil {
				p.cmd.Process.Signal(syscall.SIGQUIT)
				<-p.done
				p.cmd = nil
				t.Logf("%s %s:\n%s", p.args[0], p.args[len(p.args)-1], tail(p.logText(), 80))
			}
		}
	})
	for _, fm := range fleet {
		waitExported(t, fm)
	}
	nc, err := nats.Connect(urls)
	must(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err)
	for i := range followers {
		deadline := time.Now().Add(90 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := js.Consumer(ctx, exportStream, durable(i))
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = c.Info(ctx)
			}
			cancel()
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
				break
			}
			if time.Now().After(deadline) {
				for _, n := range nodes {
					b, _ := os.ReadFile(n.log)
					t.Logf("nats %s log (tail):\n%s", n.name, tail(string(b), 30))
				}
				t.Fatalf("follower %d not drained after 90s (%v, pending %d, ack pending %d, delivered %d); its log:\n%s\nexporter log:\n%s",
					i, err, info.NumPending, info.NumAckPending, info.Delivered.Stream, followers[i].logText(), tail(fleet[i].exp.logText(), 20))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, exportStream)
	must(t, err)
	info, err := s.Info(ctx)
	must(t, err)
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Errorf("stream: %d replicas, cluster %+v; want R3 on three nodes", info.Config.Replicas, info.Cluster)
	}
	t.Logf("stream: %d messages, %d bytes, R%d, leader %s", info.State.Msgs, info.State.Bytes, info.Config.Replicas, info.Cluster.Leader)
	for i, f := range followers {
		if err := f.stop(); err != nil {
			t.Errorf("follower %d: SIGTERM: %v; log:\n%s", i, err, f.logText())
		}
		fm := fleet[i]
		want, got := snapshot(t, fm.mnt, snapOpts{}), snapshot(t, fm.dest, snapOpts{})
		t.Logf("mount %d: %d modifications, %d paths", i, fm.mods.Load(), len(want))
		if !sameTree(t, fmt.Sprintf("mount %d: the follower's mirror vs the mount", i), want, got, "mount", "mirror") {
			t.Logf("follower %d log:\n%s", i, f.logText())
		}
	}
	for i, fm := range fleet {
		if fm.mods.Load() == 0 {
			t.Errorf("mount %d: the writers made no modification", i)
		}
	}
}

// crashMount SIGKILLs a fleet mount's daemon while its writers hold off,
// and mounts it again. (Its exporter blesses past the recovery at once,
// so status need not say recovered by the time one looks.)
func crashMount(t *testing.T, fm *fleetMount) {
	fm.gate.Lock()
	defer fm.gate.Unlock()
	fm.m.unmounted = true
	must(t, syscall.Kill(fm.m.Pid, syscall.SIGKILL))
	waitDead(t, fm.m.Pid)
	forceUnmount(t, fm.mnt, 0)
	fm.m = mount(t, withBacking(fm.backing), withMnt(fm.mnt), withJournal(fm.journal))
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
