package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hsmfs/hsmfs/internal/natsexport"
)

// --- the fleet on a three-node JetStream cluster ---

// fleetMounts is how many mounts export at once.
const fleetMounts = 6

func fleetPaths(sz sizes) int {
	if sz.short {
		return 10_000
	}
	return 50_000
}

// fleetWorkload measures hsmfs export and follow on a three-node
// JetStream cluster (embedded in the bench) with an R3 stream: docs/
// performance.md derives a fleet's needs from these rows.
func fleetWorkload(sz sizes) *workload {
	n := countLabel(fleetPaths(sz))
	return &workload{
		name: "fleet",
		desc: fmt.Sprintf("hsmfs alone: %d mounts with %s pending paths each export into a three-node JetStream cluster embedded in the bench (an R3 stream, file storage); then a follower's lag behind a steady writer", fleetMounts, n),
		metrics: []*Metric{
			{ID: "fleet.rate1", Label: fmt.Sprintf("export %s paths, 1 exporter, R3", n), Unit: "msgs/s", Section: secAbsolute, Higher: true},
			{ID: "fleet.rate6", Label: fmt.Sprintf("export %d x %s paths, %d exporters at once, R3 (total)", fleetMounts, n, fleetMounts), Unit: "msgs/s", Section: secAbsolute, Higher: true},
			{ID: "fleet.bytes", Label: "stream bytes per path (one replica)", Unit: "bytes", Section: secAbsolute},
			{ID: "fleet.lag.p50", Label: "follower lag behind a write, 20 files/s for 10 s, p50 (export and follow --every 500ms)", Unit: "s", Section: secAbsolute},
			{ID: "fleet.lag.p99", Label: "the same, p99", Unit: "s", Section: secAbsolute},
		},
		targets: []string{"hsmfs"},
		custom:  runFleet,
	}
}

func runFleet(ctx context.Context, e *Env, res *Results, w *workload) error {
	set := w.soloRep()
	store := filepath.Join(e.work, "nats-cluster")
	nodes, urls, err := startBenchCluster(store)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
		removeTree(store)
	}()
	var mnts []string
	for i := range fleetMounts {
		t, done, err := e.soloHsmfs(ctx, fmt.Sprintf("fleet%d", i))
		if err != nil {
			return err
		}
		defer done()
		if _, _, _, err := createPending(ctx, t.Mnt, fleetPaths(e.sz), e.sz.pendingWorkers, e.sz.pendingBudget, "fleet"); err != nil {
			return err
		}
		mnts = append(mnts, t.Mnt)
	}
	export := func(mnt string) (roundFigures, error) {
		cmd := exec.CommandContext(ctx, e.cfg.hsmfsBin, "export", "--nats", urls, "--stream", exportStream,
			"--create-stream", "--replicas", "3", "--max-bytes", "16G", "--timeout", "2m", mnt)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return roundFigures{}, fmt.Errorf("hsmfs export %s: %v: %s", mnt, err, bytes.TrimSpace(out.Bytes()))
		}
		return parseRound(out.String())
	}
	one, err := export(mnts[0])
	if err != nil {
		return err
	}
	set("fleet.rate1", float64(one.count)/one.publish)
	// Mount 0 gets new pending paths, and the six export at once.
	again := filepath.Join(mnts[0], "again")
	if err := os.Mkdir(again, 0o755); err != nil {
		return err
	}
	if _, _, _, err := createPending(ctx, again, fleetPaths(e.sz), e.sz.pendingWorkers, e.sz.pendingBudget, "fleet-again"); err != nil {
		return err
	}
	rounds := make([]roundFigures, fleetMounts)
	errs := make([]error, fleetMounts)
	var wg sync.WaitGroup
	start := time.Now()
	for i, mnt := range mnts {
		wg.Add(1)
		go func() { defer wg.Done(); rounds[i], errs[i] = export(mnt) }()
	}
	wg.Wait()
	wall := time.Since(start)
	total, slowest := int64(0), 0.0
	for i := range rounds {
		if errs[i] != nil {
			return errs[i]
		}
		total += rounds[i].count
		slowest = max(slowest, rounds[i].publish)
	}
	set("fleet.rate6", float64(total)/slowest)
	msgs, bytes, err := clusterStream(nodes)
	if err != nil {
		return err
	}
	set("fleet.bytes", float64(bytes)/float64(msgs))
	fmt.Printf("  fleet: 1 exporter %.0f msgs/s; %d at once %.0f msgs/s in all (%d messages, slowest publish %.2fs, wall %.2fs); %d messages, %.0f bytes each\n",
		float64(one.count)/one.publish, fleetMounts, float64(total)/slowest, total, slowest, wall.Seconds(), msgs, float64(bytes)/float64(msgs))
	p50, p99, err := followerLag(ctx, e, urls, mnts[0])
	if err != nil {
		return err
	}
	set("fleet.lag.p50", p50)
	set("fleet.lag.p99", p99)
	res.Note(fmt.Sprintf("fleet: R3 on 3 embedded servers: 1 exporter %.0f msgs/s, %d at once %.0f msgs/s, %.0f stream bytes a path, follower lag p50 %.2fs p99 %.2fs",
		float64(one.count)/one.publish, fleetMounts, float64(total)/slowest, float64(bytes)/float64(msgs), p50, p99))
	return nil
}

// followerLag runs an exporter and a follower of mnt every 500 ms while
// a writer makes 20 files a second for 10 s, and returns the p50 and p99
// of the time from a file's write to its arrival in the mirror.
func followerLag(ctx context.Context, e *Env, urls, mnt string) (p50, p99 float64, err error) {
	dest := filepath.Join(e.work, "fleet-mirror")
	defer removeTree(dest)
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return 0, 0, err
	}
	host, _ := os.Hostname()
	filter := natsexport.Subject(natsexport.DefaultSubjectPrefix, host, mnt, natsexport.DefaultConsumer)
	procs := []*exec.Cmd{
		exec.CommandContext(ctx, e.cfg.hsmfsBin, "export", "--every", "500ms", "--nats", urls, "--stream", exportStream, mnt),
		exec.CommandContext(ctx, e.cfg.hsmfsBin, "follow", "--every", "500ms", "--nats", urls, "--stream", exportStream,
			"--durable", "bench-lag", "--filter", filter, mnt, dest),
	}
	var followLog bytes.Buffer
	procs[1].Stderr = &followLog
	defer func() { fmt.Printf("  fleet: the follower's log (tail):\n%s\n", lastLines(followLog.String(), 12)) }()
	for _, p := range procs {
		if err := p.Start(); err != nil {
			return 0, 0, err
		}
		e.addProc(p.Process.Pid, "hsmfs "+p.Args[1])
		defer func(p *exec.Cmd) {
			p.Process.Signal(os.Interrupt)
			p.Wait()
			e.delProc(p.Process.Pid)
		}(p)
	}
	// The follower first catches up with what the export rounds put in
	// the stream (it copies the whole tree once).
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(dest, "pending-fleet-again-done"))
		return err == nil
	}, func() error { return os.WriteFile(filepath.Join(mnt, "pending-fleet-again-done"), nil, 0o644) }); err != nil {
		return 0, 0, fmt.Errorf("fleet: the follower did not catch up: %w", err)
	}
	lagDir := filepath.Join(mnt, "lag")
	if err := os.MkdirAll(lagDir, 0o755); err != nil {
		return 0, 0, err
	}
	const files = 200
	written := make([]time.Time, files)
	go func() {
		for i := range files {
			written[i] = time.Now()
			os.WriteFile(filepath.Join(lagDir, fmt.Sprintf("f%03d", i)), []byte("lag\n"), 0o644)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var lags []float64
	seen := make([]bool, files)
	deadline := time.Now().Add(2 * time.Minute)
	for len(lags) < files && time.Now().Before(deadline) {
		now := time.Now()
		for i := range files {
			if seen[i] || written[i].IsZero() {
				continue
			}
			if _, err := os.Stat(filepath.Join(dest, "lag", fmt.Sprintf("f%03d", i))); err == nil {
				seen[i] = true
				lags = append(lags, now.Sub(written[i]).Seconds())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(lags) < files {
		return 0, 0, fmt.Errorf("fleet: %d of %d files reached the mirror within 2 minutes", len(lags), files)
	}
	slices.Sort(lags)
	return lags[len(lags)/2], lags[len(lags)*99/100], nil
}

// waitFor runs first, then waits until ok.
func waitFor(ctx context.Context, limit time.Duration, ok func() bool, first func() error) error {
	if err := first(); err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not within %s", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// startBenchCluster starts three JetStream servers as one cluster on
// loopback ports, and waits until it has a meta leader.
func startBenchCluster(dir string) ([]*server.Server, string, error) {
	ports := make([]int, 6)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []*url.URL
	for i := range 3 {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[3+i])})
	}
	var nodes []*server.Server
	var urls []string
	for i := range 3 {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: ports[i], JetStream: true,
			StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "hsmfs-bench", Host: "127.0.0.1", Port: ports[3+i]}, Routes: routes}
		s, err := server.NewServer(o)
		if err != nil {
			return nil, "", fmt.Errorf("nats-server: %w", err)
		}
		s.Start()
		nodes = append(nodes, s)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	for _, s := range nodes {
		if !s.ReadyForConnections(20 * time.Second) {
			return nodes, "", fmt.Errorf("nats-server did not start")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.ContainsFunc(nodes, func(s *server.Server) bool { return s.JetStreamIsLeader() }) {
		if time.Now().After(deadline) {
			return nodes, "", fmt.Errorf("the cluster elected no JetStream meta leader within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nodes, strings.Join(urls, ","), nil
}

// clusterStream is the bench stream's messages and bytes, as its leader
// sees them.
func clusterStream(nodes []*server.Server) (msgs, bytes uint64, err error) {
	for _, s := range nodes {
		info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
		if err != nil {
			continue
		}
		for _, a := range info.AccountDetails {
			for _, st := range a.Streams {
				if st.Name == exportStream && st.State.Msgs > 0 {
					return st.State.Msgs, st.State.Bytes, nil
				}
			}
		}
	}
	return 0, 0, fmt.Errorf("stream %s not found on the cluster", exportStream)
}
