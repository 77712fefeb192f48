package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// --- the HSM: archive, release, restore on open ---

// hsmWorkload measures the HSM on a directory tier (docs/hsm.md), hsmfs
// alone, each against the plain operation that it stands for.
func hsmWorkload(sz sizes) *workload {
	big := hsmBigBytes(sz) >> 20
	return &workload{
		name: "hsm",
		desc: fmt.Sprintf("hsmfs alone, a directory tier on the work directory's disk: archive, release and restore of one %d MiB file, first-byte latency of %d released 1 MiB files, release of %d archived 4 KiB files, and hsmfs sync of a tree of released files", big, hsmSmallFiles, hsmReleaseFiles),
		metrics: []*Metric{
			{ID: "hsm.archive.raw", Label: fmt.Sprintf("reference: copy %d MiB into the tier directory, fsync", big), Unit: "MiB/s", Section: secAbsolute, Higher: true},
			{ID: "hsm.archive", Label: fmt.Sprintf("hsm archive of %d MiB", big), Unit: "MiB/s", Section: secAbsolute, Higher: true},
			{ID: "hsm.archive.ratio", Label: "archive / that copy", Unit: "x", Section: secAbsolute, Higher: true, Goal: Goal{Op: ">=", Value: 0.90}},
			{ID: "hsm.restore.raw", Label: fmt.Sprintf("reference: copy %d MiB from the tier into BACKING, fsync, caches dropped", big), Unit: "s", Section: secAbsolute},
			{ID: "hsm.restore", Label: fmt.Sprintf("restore on open: open and first byte of the released %d MiB file, caches dropped", big), Unit: "s", Section: secAbsolute},
			{ID: "hsm.restore.ratio", Label: "restore on open / that copy", Unit: "x", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 1.10}},
			{ID: "hsm.read.never", Label: fmt.Sprintf("read %d MiB never released, caches dropped", big), Unit: "MiB/s", Section: secAbsolute, Higher: true},
			{ID: "hsm.read.restored", Label: "the same file after a release and a restore", Unit: "MiB/s", Section: secAbsolute, Higher: true},
			{ID: "hsm.read.ratio", Label: "restored / never released", Unit: "x", Section: secAbsolute, Higher: true, Goal: Goal{Op: ">=", Value: 0.90}},
			{ID: "hsm.firstbyte.p50", Label: fmt.Sprintf("first byte of a released 1 MiB file, p50 of %d", hsmSmallFiles), Unit: "ms", Section: secAbsolute},
			{ID: "hsm.firstbyte.p99", Label: "the same, p99", Unit: "ms", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 20}},
			{ID: "hsm.release", Label: fmt.Sprintf("hsm release of %d archived 4 KiB files (32 jobs)", hsmReleaseFiles), Unit: "files/s", Section: secAbsolute, Higher: true, Goal: Goal{Op: ">=", Value: 5000}},
			{ID: "hsm.sync.restored", Label: fmt.Sprintf("files restored by hsmfs sync of those %d released files", hsmReleaseFiles), Unit: "files", Section: secAbsolute, Goal: Goal{Op: "<=", Value: 0}},
		},
		targets: []string{"hsmfs"},
		custom:  runHSM,
	}
}

const (
	hsmSmallFiles   = 200
	hsmReleaseFiles = 5000
)

func hsmBigBytes(sz sizes) int64 { return min(sz.seqBytes, 256<<20) }

func runHSM(ctx context.Context, e *Env, res *Results, w *workload) error {
	set := w.soloRep()
	t, done, err := e.soloHsmfs(ctx, "hsm")
	if err != nil {
		return err
	}
	defer done()
	tierDir := filepath.Join(e.work, "hsm-tier")
	if err := os.MkdirAll(tierDir, 0o700); err != nil {
		return err
	}
	defer removeTree(tierDir)
	hsm := func(args ...string) error {
		out, err := exec.CommandContext(ctx, e.cfg.hsmfsBin, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("hsmfs %v: %v: %s", args[:2], err, out)
		}
		return nil
	}
	if err := hsm("tier", "add", t.Mnt, "1", "dir://"+tierDir); err != nil {
		return err
	}
	if err := hsmBig(e, t.Mnt, t.Backing, tierDir, hsm, set); err != nil {
		return err
	}
	if err := hsmFirstByte(t.Mnt, hsm, set); err != nil {
		return err
	}
	return hsmRelease(ctx, e, t.Mnt, hsm, set)
}

// hsmBig: archive, restore on open and reads of one big file, each
// against the plain copy or read that it stands for.
func hsmBig(e *Env, mnt, backing, tierDir string, hsm func(...string) error, set func(string, float64)) error {
	size := hsmBigBytes(e.sz)
	mib := float64(size) / (1 << 20)
	never, big := filepath.Join(mnt, "never"), filepath.Join(mnt, "big")
	for _, p := range []string{never, big} {
		if err := writeRandom(p, size); err != nil {
			return err
		}
	}
	// The reference copy reads what the archive reads (the file, warm
	// in the page cache) and writes where it writes. They alternate,
	// three times each, every one after a sync (so that neither pays
	// for the other's writeback), and the median of each counts.
	var copies, archives []float64
	for rep := range 3 {
		unix.Sync()
		start := time.Now()
		if err := copyFileSync(filepath.Join(backing, "big"), filepath.Join(tierDir, "reference")); err != nil {
			return err
		}
		copies = append(copies, mib/time.Since(start).Seconds())
		if rep > 0 {
			// An archived, clean file is not archived again.
			if err := appendFile(big, "x"); err != nil {
				return err
			}
		}
		unix.Sync()
		start = time.Now()
		if err := hsm("hsm", "archive", big); err != nil {
			return err
		}
		archives = append(archives, mib/time.Since(start).Seconds())
	}
	copyRate, archiveRate := median(copies), median(archives)
	set("hsm.archive.raw", copyRate)
	set("hsm.archive", archiveRate)
	set("hsm.archive.ratio", archiveRate/copyRate)
	// Restore on open against a plain copy from the tier into BACKING
	// (synced, as a restore is), caches dropped before each; they
	// alternate three times, and the median of each counts.
	var raws, restores []float64
	for range 3 {
		if err := hsm("hsm", "release", big); err != nil {
			return err
		}
		dropCaches()
		start := time.Now()
		if err := copyFileSync(filepath.Join(tierDir, "reference"), filepath.Join(backing, "reference")); err != nil {
			return err
		}
		raws = append(raws, time.Since(start).Seconds())
		os.Remove(filepath.Join(backing, "reference"))
		dropCaches()
		start = time.Now()
		if err := firstByte(big); err != nil {
			return err
		}
		restores = append(restores, time.Since(start).Seconds())
	}
	raw, restore := median(raws), median(restores)
	set("hsm.restore.raw", raw)
	set("hsm.restore", restore)
	set("hsm.restore.ratio", restore/raw)
	var rates [2]float64
	for i, r := range []struct{ id, path string }{{"hsm.read.never", never}, {"hsm.read.restored", big}} {
		dropCaches()
		start := time.Now()
		if _, err := readAll(r.path); err != nil {
			return err
		}
		rates[i] = mib / time.Since(start).Seconds()
		set(r.id, rates[i])
	}
	set("hsm.read.ratio", rates[1]/rates[0])
	fmt.Printf("  hsm: archive %.0f MiB/s (copy %.0f), restore on open %.2fs (copy %.2fs)\n",
		archiveRate, copyRate, restore, raw)
	return nil
}

// hsmFirstByte: the latency of an open and a one-byte read of released
// 1 MiB files, caches dropped.
func hsmFirstByte(mnt string, hsm func(...string) error, set func(string, float64)) error {
	dir := filepath.Join(mnt, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var paths []string
	for i := range hsmSmallFiles {
		p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		if err := writeRandom(p, 1<<20); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	for _, verb := range []string{"archive", "release"} {
		if err := hsm(append([]string{"hsm", verb}, paths...)...); err != nil {
			return err
		}
	}
	dropCaches()
	lat := make([]float64, 0, len(paths))
	for _, p := range paths {
		start := time.Now()
		if err := firstByte(p); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(lat)
	set("hsm.firstbyte.p50", lat[len(lat)/2])
	set("hsm.firstbyte.p99", lat[len(lat)*99/100])
	fmt.Printf("  hsm: first byte of a released 1 MiB file: p50 %.2f ms, p99 %.2f ms\n", lat[len(lat)/2], lat[len(lat)*99/100])
	return nil
}

// hsmRelease: the release rate of many small archived files, then a
// sync of them that must restore none.
func hsmRelease(ctx context.Context, e *Env, mnt string, hsm func(...string) error, set func(string, float64)) error {
	dir := filepath.Join(mnt, "many")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var paths []string
	for i := range hsmReleaseFiles {
		p := filepath.Join(dir, fmt.Sprintf("f%04d", i))
		if err := writeRandom(p, 4096); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	if err := hsm(append([]string{"hsm", "archive"}, paths...)...); err != nil {
		return err
	}
	start := time.Now()
	if err := hsm(append([]string{"hsm", "release"}, paths...)...); err != nil {
		return err
	}
	rate := float64(len(paths)) / time.Since(start).Seconds()
	set("hsm.release", rate)
	dest := filepath.Join(e.work, "hsm-mirror")
	defer removeTree(dest)
	if err := hsm("sync", mnt, dest); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, e.cfg.hsmfsBin, append([]string{"hsm", "state", "--json"}, paths...)...).Output()
	if err != nil {
		return fmt.Errorf("hsm state: %w", err)
	}
	restored := 0
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var st struct{ States []string }
		if err := dec.Decode(&st); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		if !slices.Contains(st.States, "released") {
			restored++
		}
	}
	set("hsm.sync.restored", float64(restored))
	fmt.Printf("  hsm: release %.0f files/s; a sync of them restored %d\n", rate, restored)
	return nil
}

func writeRandom(p string, size int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyFileSync copies src to dst with 1 MiB buffers and fsyncs it and its
// directory, as the directory tier does.
func copyFileSync(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(out, in, make([]byte, 1<<20))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Fsync(int(d.Fd()))
}

func readAll(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
}

// firstByte opens p and reads one byte: through the mount, the open of a
// released file returns once it is restored.
func firstByte(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 1))
	return err
}
