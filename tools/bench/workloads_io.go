package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// --- sequential I/O ---

var ioBuf = func() []byte {
	b := make([]byte, 1<<20)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}()

// writeFile writes size bytes in 1 MiB writes; the time covers open,
// the writes, the fsync if asked, and close.
func writeFile(p string, size int64, fsync bool) (time.Duration, error) {
	return writeFileBy(p, size, fsync, ioBuf)
}

// writeFileBy is writeFile in writes of len(buf) bytes.
func writeFileBy(p string, size int64, fsync bool, buf []byte) (time.Duration, error) {
	start := time.Now()
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", p, err)
	}
	for n := int64(0); n < size; {
		w, err := unix.Write(fd, buf)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("write %s: %w", p, err)
		}
		n += int64(w)
	}
	if fsync {
		if err := unix.Fsync(fd); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	if err := unix.Close(fd); err != nil {
		return 0, fmt.Errorf("close %s: %w", p, err)
	}
	return time.Since(start), nil
}

// readFile reads p whole in 1 MiB reads; the time covers open and close.
func readFile(p string, want int64) (time.Duration, error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", p, err)
	}
	var n int64
	for {
		r, err := unix.Read(fd, buf)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("read %s: %w", p, err)
		}
		if r == 0 {
			break
		}
		n += int64(r)
	}
	unix.Close(fd)
	d := time.Since(start)
	if n != want {
		return 0, fmt.Errorf("read %s: %d bytes, want %d", p, n, want)
	}
	return d, nil
}

func mibps(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }

// setupSeqWrite writes and deletes the file once on every target,
// untimed: the first large write after a quiet spell pays for reclaiming
// page cache and would make the first sample an outlier.
func setupSeqWrite(ctx context.Context, e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		p := filepath.Join(t.Dir, "seqwrite.dat")
		if _, err := writeFile(p, e.sz.seqBytes, false); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		if err := t.settle(); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
	}
	unix.Sync()
	return nil
}

func sampleSeqWrite(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	p := filepath.Join(t.Dir, "seqwrite.dat")
	out := map[string]float64{}
	for _, v := range []struct {
		id    string
		fsync bool
		buf   []byte
		size  int64
	}{
		{"seqwrite.nofsync", false, ioBuf, e.sz.seqBytes},
		{"seqwrite.fsync", true, ioBuf, e.sz.seqBytes},
		{"seqwrite.4k", false, smallFile, e.sz.seqBytes / 4},
	} {
		// Start from a clean slate: no dirty data of earlier samples.
		unix.Sync()
		d, err := writeFileBy(p, v.size, v.fsync, v.buf)
		if err != nil {
			return nil, err
		}
		out[v.id] = mibps(v.size, d)
		if err := os.Remove(p); err != nil {
			return nil, err
		}
	}
	unix.Sync()
	return out, nil
}

func setupSeqRead(ctx context.Context, e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		if _, err := writeFile(filepath.Join(t.Dir, "seqread.dat"), e.sz.seqBytes, true); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
		if err := t.settle(); err != nil {
			return fmt.Errorf("%s: %w", tn, err)
		}
	}
	return nil
}

func sampleSeqRead(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	p := filepath.Join(t.Dir, "seqread.dat")
	if err := dropCaches(); err != nil {
		return nil, err
	}
	cold, err := readFile(p, e.sz.seqBytes)
	if err != nil {
		return nil, err
	}
	warm, err := readFile(p, e.sz.seqBytes)
	if err != nil {
		return nil, err
	}
	return map[string]float64{"seqread.cold": mibps(e.sz.seqBytes, cold), "seqread.warm": mibps(e.sz.seqBytes, warm)}, nil
}

func teardownSeqRead(e *Env) error {
	for _, tn := range threeTargets {
		t := e.target(tn)
		if t.dead != nil {
			continue
		}
		if err := os.Remove(filepath.Join(t.Dir, "seqread.dat")); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := t.settle(); err != nil {
			return err
		}
	}
	return nil
}

// --- small-file metadata ---

var metaPhases = []string{"create", "chmod", "rename", "unlink"}

var smallFile = ioBuf[:4096]

// metaPhase runs one kind of operation over n files in dir. The files
// are f00000... until renamed to r00000...
func metaPhase(dir, phase string, n int) error {
	name := func(prefix byte, i int) string {
		return dir + "/" + string(prefix) + fmt.Sprintf("%05d", i)
	}
	for i := 0; i < n; i++ {
		var err error
		switch phase {
		case "create":
			var fd int
			fd, err = unix.Open(name('f', i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				_, err = unix.Write(fd, smallFile)
				if cerr := unix.Close(fd); err == nil {
					err = cerr
				}
			}
		case "chmod":
			err = unix.Chmod(name('f', i), 0o600)
		case "rename":
			err = unix.Rename(name('f', i), name('r', i))
		case "unlink":
			err = unix.Unlink(name('r', i))
		default:
			return fmt.Errorf("unknown phase %q", phase)
		}
		if err != nil {
			return fmt.Errorf("%s %d in %s: %w", phase, i, dir, err)
		}
	}
	return nil
}

func sampleMetaSerial(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	dir := filepath.Join(t.Dir, fmt.Sprintf("meta-serial-%d", rep))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	unix.Sync()
	out := map[string]float64{}
	n := e.sz.metaFiles
	for _, ph := range metaPhases {
		start := time.Now()
		if err := metaPhase(dir, ph, n); err != nil {
			return nil, err
		}
		out["meta.serial."+ph] = float64(n) / time.Since(start).Seconds()
	}
	return out, os.Remove(dir)
}

func sampleMetaParallel(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	base := filepath.Join(t.Dir, fmt.Sprintf("meta-parallel-%d", rep))
	if err := os.Mkdir(base, 0o755); err != nil {
		return nil, err
	}
	per := e.sz.metaFiles / e.sz.parWorkers
	ws, err := startWorkers(e, base, e.sz.parWorkers, per)
	if err != nil {
		return nil, err
	}
	defer ws.stop()
	unix.Sync()
	out := map[string]float64{}
	for _, ph := range metaPhases {
		start := time.Now()
		if err := ws.do(ph); err != nil {
			return nil, err
		}
		out["meta.parallel."+ph] = float64(per*e.sz.parWorkers) / time.Since(start).Seconds()
	}
	if err := ws.do("exit"); err != nil {
		return nil, err
	}
	ws.stop()
	return out, os.Remove(base)
}
