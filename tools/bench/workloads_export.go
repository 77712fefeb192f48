package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// --- export into NATS JetStream ---

// exportStream is the stream the export workload creates.
const exportStream = "HSMFSBENCH"

// runExport: one exporter (`hsmfs export`, the real binary) publishes a
// large answer into a JetStream server embedded in this process (file
// storage in the work directory). A fresh hsmfs gets the pending paths
// of the pending workload; then one export round: the query, one
// message per path with async publishes, every ack, the bless. The rate
// is messages per second of the publish phase (reading the answer and
// publishing until the last ack), from the exporter's own timings; the
// round's wall time and the exporter's peak RSS are rows too. The server
// shares the 2 cores with the exporter and the daemon.
func runExport(ctx context.Context, e *Env, res *Results, w *workload) error {
	set := w.soloRep()
	failAll := func(err error) error {
		res.errors++
		for _, mm := range w.metrics {
			mm.fail("hsmfs", err.Error())
		}
		return err
	}
	t, done, err := e.soloHsmfs(ctx, "export")
	if err != nil {
		return err
	}
	defer done()
	n, _, _, err := createPending(ctx, t.Mnt, e.sz.pendingPaths, e.sz.pendingWorkers, e.sz.pendingBudget, "export")
	if err := ctx.Err(); err != nil {
		return err
	}
	if err != nil {
		return failAll(fmt.Errorf("creating pending paths: %w", err))
	}
	if n < int64(e.sz.pendingPaths) {
		res.Note(fmt.Sprintf("export: only %d of %d paths were created within the %s budget; the rows are marked INCOMPLETE", n, e.sz.pendingPaths, e.sz.pendingBudget))
		for _, mm := range w.metrics {
			mm.Incomplete = true
		}
	}

	store := filepath.Join(e.work, "nats-store")
	ns, err := startBenchNATS(store)
	if err != nil {
		return failAll(err)
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		removeTree(store)
	}()
	url := fmt.Sprintf("nats://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)

	cmd := exec.CommandContext(ctx, e.cfg.hsmfsBin, "export", "--nats", url, "--stream", exportStream,
		"--create-stream", "--max-bytes", "16G", "--timeout", "2m", t.Mnt)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return failAll(fmt.Errorf("hsmfs export: %w", err))
	}
	e.addProc(cmd.Process.Pid, "hsmfs export")
	err = cmd.Wait()
	e.delProc(cmd.Process.Pid)
	wall := time.Since(start)
	if err != nil {
		return failAll(fmt.Errorf("hsmfs export: %v: %s", err, bytes.TrimSpace(stderr.Bytes())))
	}
	fmt.Printf("  export: %s", stderr.String())
	r, err := parseRound(stderr.String())
	if err != nil {
		return failAll(err)
	}
	stored, err := streamMsgs(ns)
	if err != nil {
		return failAll(err)
	}
	if r.count < n || stored != uint64(r.count) {
		return failAll(fmt.Errorf("export: %d paths pending, %d messages acknowledged, %d in the stream", n, r.count, stored))
	}
	rss := float64(0)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	rate := float64(r.count) / r.publish
	set("export.rate", rate)
	set("export.round", wall.Seconds())
	set("export.rss", rss)
	fmt.Printf("  export: %d messages in %.2fs of publishing (%.0f msgs/s); round %.2fs (query %.2fs, bless %.3fs); exporter peak RSS %.0f MiB\n",
		r.count, r.publish, rate, wall.Seconds(), r.query, r.bless, rss)
	res.Note(fmt.Sprintf("export: %d messages, %.0f msgs/s while publishing (query %.2fs, publish %.2fs, bless %.3fs; round %.2fs wall); exporter peak RSS %.0f MiB",
		r.count, rate, r.query, r.publish, r.bless, wall.Seconds(), rss))
	return nil
}

// startBenchNATS starts a JetStream server on a free loopback port, its
// store in dir.
func startBenchNATS(dir string) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server did not start")
	}
	return s, nil
}

// streamMsgs is how many messages the bench's stream holds.
func streamMsgs(s *server.Server) (uint64, error) {
	info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return 0, fmt.Errorf("jsz: %w", err)
	}
	for _, a := range info.AccountDetails {
		for _, st := range a.Streams {
			if st.Name == exportStream {
				return st.State.Msgs, nil
			}
		}
	}
	return 0, fmt.Errorf("stream %s not found on the server", exportStream)
}

type roundFigures struct {
	count                 int64
	query, publish, bless float64
}

var roundRe = regexp.MustCompile(`query \d+: (\d+) messages? acknowledged \(\d+ duplicates\), blessed; query ([0-9.]+)s, publish ([0-9.]+)s, bless ([0-9.]+)s`)

// parseRound reads the exporter's line about its round.
func parseRound(out string) (roundFigures, error) {
	m := roundRe.FindStringSubmatch(out)
	if m == nil {
		return roundFigures{}, fmt.Errorf("export: no round line in %q", out)
	}
	var r roundFigures
	r.count, _ = strconv.ParseInt(m[1], 10, 64)
	r.query, _ = strconv.ParseFloat(m[2], 64)
	r.publish, _ = strconv.ParseFloat(m[3], 64)
	r.bless, _ = strconv.ParseFloat(m[4], 64)
	if r.publish <= 0 {
		return r, fmt.Errorf("export: no publish time in %q", out)
	}
	return r, nil
}
