package tier

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func openTestDir(t *testing.T) Tier {
	t.Helper()
	dir := t.TempDir()
	tr, err := Open(context.Background(), "dir://"+dir)
	if err != nil {
		t.Fatalf("Open(dir://%s): %v", dir, err)
	}
	return tr
}

func TestDirContract(t *testing.T) {
	runContract(t, func(t *testing.T) Tier {
		tr := openTestDir(t)
		t.Cleanup(func() { checkNoTemps(t, tr.(*dirTier).dir) })
		return tr
	})
}

// checkNoTemps: every Put, failed or not, removes its temporary.
func checkNoTemps(t *testing.T, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s left in the tier", e.Name())
		}
	}
}

func TestDirFiles(t *testing.T) {
	tr := openTestDir(t)
	dir := tr.(*dirTier).dir
	if got, want := tr.String(), "dir://"+dir; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	put(t, tr, "obj", testData(t, 1000))
	fi, err := os.Stat(filepath.Join(dir, "obj"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 1000 {
		t.Errorf("DIR/obj: mode %v size %d, want 0600 and 1000", fi.Mode().Perm(), fi.Size())
	}

	// Temporaries are never listed; those untouched for an hour are
	// removed by List, fresher ones (a Put under way) are kept.
	stale := filepath.Join(dir, ".tmp-obj-123")
	fresh := filepath.Join(dir, ".tmp-obj-456")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	// Not objects: a subdirectory, a name no object can have.
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lost+found"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := list(t, tr); !slices.Equal(got, []string{"obj"}) {
		t.Errorf("List: %q, want [obj]", got)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary: %v, want removed", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary: %v, want kept", err)
	}
	if rc, _, err := tr.Open(context.Background(), "subdir"); err == nil {
		rc.Close()
		t.Errorf("Open of a directory succeeded")
	}
}

func TestOpenDirRefused(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ url, want string }{
		{"dir:///nonexistent/hsmfs-tier", "no such file or directory"},
		{"dir://" + file, "not a directory"},
		{"dir://relative/path", "absolute"},
		{"dir:relative/path", "absolute"},
		{"dir:", "absolute"},
		{"dir:///tmp?x=1", "no query"},
		{"/tmp", "no scheme"},
		{"tmp", "no scheme"},
		{"file:///tmp", "unknown scheme"},
		{"ftp://host/x", "unknown scheme"},
	} {
		tr, err := Open(ctx, c.url)
		if err == nil {
			t.Errorf("Open(%q) = %v, want an error", c.url, tr)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q): %v, want it to say %q", c.url, err, c.want)
		}
	}
	// One slash is an absolute path too, and the URL is made canonical.
	dir := t.TempDir()
	tr, err := Open(ctx, "dir:"+dir+"/./")
	if err != nil {
		t.Fatalf("Open(dir:%s/./): %v", dir, err)
	}
	if tr.String() != "dir://"+dir {
		t.Errorf("String() = %q, want dir://%s", tr, dir)
	}
}

// TestDirThroughput compares a 70 MiB Put from a file with cp of the same
// file followed by a sync of the copy: the same work, durable. It only
// logs: timings on a shared machine are too noisy to assert.
func TestDirThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	cp, err := exec.LookPath("cp")
	if err != nil {
		t.Skip("no cp")
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, testData(t, bigSize), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := openTestDir(t)
	dir := tr.(*dirTier).dir
	best := func(f func(i int)) time.Duration {
		d := time.Duration(1 << 62)
		for i := range 3 {
			start := time.Now()
			f(i)
			d = min(d, time.Since(start))
		}
		return d
	}
	cpTime := best(func(i int) {
		dst := filepath.Join(dir, "cp"+string(rune('0'+i)))
		if out, err := exec.Command(cp, src, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		f, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
	putTime := best(func(i int) {
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// plainReader: the caller's reader is a TeeReader, not a file.
		if err := tr.Put(context.Background(), "put"+string(rune('0'+i)), plainReader{f}, bigSize); err != nil {
			t.Fatal(err)
		}
	})
	mibs := func(d time.Duration) float64 { return float64(bigSize) / mib / d.Seconds() }
	t.Logf("70 MiB, best of 3: cp+fsync %v (%.0f MiB/s), Put %v (%.0f MiB/s): Put at %.0f%% of cp",
		cpTime.Round(time.Millisecond), mibs(cpTime), putTime.Round(time.Millisecond), mibs(putTime),
		100*cpTime.Seconds()/putTime.Seconds())
}
