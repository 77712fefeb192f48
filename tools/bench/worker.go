package bench

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The parallel small-file workload re-executes this binary as worker
// processes ("hsmfs-bench worker --dir D --n N"), each in its own
// directory. The parent sends one phase name per line on stdin; the worker
// runs it over its N files and answers "ok" or "err REASON". "exit"
// removes the directory and ends the worker.

func workerMain(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	dir := fs.String("dir", "", "")
	n := fs.Int("n", 0, "")
	if err := fs.Parse(args); err != nil || *dir == "" || *n <= 0 {
		fmt.Fprintln(os.Stderr, "usage: hsmfs-bench worker --dir DIR --n N")
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	reply := func(s string) {
		out.WriteString(s + "\n")
		out.Flush()
	}
	if err := os.Mkdir(*dir, 0o755); err != nil {
		reply("err " + oneLine(err.Error()))
		return 1
	}
	reply("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd := strings.TrimSpace(in.Text())
		if cmd == "exit" {
			if err := os.Remove(*dir); err != nil {
				reply("err " + oneLine(err.Error()))
				return 1
			}
			reply("ok")
			return 0
		}
		if err := metaPhase(*dir, cmd, *n); err != nil {
			reply("err " + oneLine(err.Error()))
			continue
		}
		reply("ok")
	}
	return 0
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

type worker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

type workers struct {
	e    *Env
	ws   []*worker
	once sync.Once
}

func startWorkers(e *Env, base string, n, per int) (*workers, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	g := &workers{e: e}
	for i := 0; i < n; i++ {
		c := exec.Command(exe, "worker", "--dir", filepath.Join(base, fmt.Sprintf("w%d", i)), "--n", fmt.Sprint(per))
		c.Stderr = os.Stderr
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		in, err := c.StdinPipe()
		if err != nil {
			g.stop()
			return nil, err
		}
		out, err := c.StdoutPipe()
		if err != nil {
			g.stop()
			return nil, err
		}
		if err := c.Start(); err != nil {
			g.stop()
			return nil, err
		}
		e.addProc(c.Process.Pid, "worker")
		g.ws = append(g.ws, &worker{cmd: c, in: in, out: bufio.NewReader(out)})
	}
	for _, w := range g.ws {
		if err := w.expect("ready"); err != nil {
			g.stop()
			return nil, err
		}
	}
	return g, nil
}

func (w *worker) expect(want string) error {
	line, err := w.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("worker %d: %w", w.cmd.Process.Pid, err)
	}
	line = strings.TrimSpace(line)
	if line != want {
		return fmt.Errorf("worker %d: %s", w.cmd.Process.Pid, strings.TrimPrefix(line, "err "))
	}
	return nil
}

// do runs one phase in every worker at once and waits for all of them.
func (g *workers) do(phase string) error {
	for _, w := range g.ws {
		if _, err := io.WriteString(w.in, phase+"\n"); err != nil {
			return err
		}
	}
	var first error
	for _, w := range g.ws {
		if err := w.expect("ok"); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (g *workers) stop() {
	g.once.Do(func() {
		for _, w := range g.ws {
			w.in.Close()
			done := make(chan struct{})
			go func() { w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				w.cmd.Process.Kill()
				<-done
			}
			g.e.delProc(w.cmd.Process.Pid)
		}
	})
}
