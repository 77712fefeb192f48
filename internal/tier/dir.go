package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// dirTier keeps objects as the files DIR/NAME of one flat directory,
// written by Put through DIR/.tmp-NAME-RANDOM. It is written on os calls
// alone, not on a blob library: durability rests on the fsync of the
// file before its rename and of the directory after, which such
// libraries skip.
type dirTier struct {
	dir string // absolute and clean
	url string
}

const (
	// tmpPrefix starts every temporary: no valid name starts with '.', so
	// a temporary is never taken for an object, and List skips it.
	tmpPrefix = ".tmp-"
	// tmpMaxAge is how long List leaves a temporary alone. Put writes its
	// temporary at least every copyBuf bytes, so one unchanged for an hour
	// belongs to a Put that died (a crash, a killed daemon). Should a Put
	// stall that long, removing its temporary only makes it fail: its
	// rename finds no file, and the name keeps its old object.
	tmpMaxAge = time.Hour
	// copyBuf is the size of Put's reads and writes: large enough that
	// system calls cost nothing next to the copy itself, whatever the
	// reader (io.Copy's 32 KiB would make that four syscalls per 128 KiB).
	copyBuf = 1 << 20
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

func openDir(u *url.URL) (Tier, error) {
	shown := redact(u)
	if u.Opaque != "" || u.Host != "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("tier %s: want dir:///ABSOLUTE/PATH (an absolute path, three slashes)", shown)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tier %s: a dir tier takes no query or fragment", shown)
	}
	dir := filepath.Clean(u.Path)
	d := &dirTier{dir: dir, url: (&url.URL{Scheme: "dir", Path: dir}).String()}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("tier %s: %w", d.url, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("tier %s: %s is not a directory", d.url, dir)
	}
	// Writable, as the tier's files are written: a read-only mount, a
	// full disk or a directory of another user fails now, not at the
	// first archive.
	f, err := os.CreateTemp(dir, tmpPrefix+"probe-*")
	if err != nil {
		return nil, fmt.Errorf("tier %s: not writable: %w", d.url, err)
	}
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	if err := errors.Join(cerr, rerr); err != nil {
		return nil, fmt.Errorf("tier %s: not writable: %w", d.url, err)
	}
	return d, nil
}

func (d *dirTier) String() string { return d.url }

// opErr wraps err with the tier, the operation and the object name.
func opErr(t Tier, op, name string, err error) error {
	if ValidName(name) {
		return fmt.Errorf("tier %s: %s %s: %w", t, op, name, err)
	}
	return fmt.Errorf("tier %s: %s: %w", t, op, err)
}

func (d *dirTier) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := errors.Join(checkName(name), checkSize(size)); err != nil {
		return opErr(d, "put", name, err)
	}
	if err := d.put(ctx, name, r, size); err != nil {
		return opErr(d, "put", name, err)
	}
	return nil
}

func (d *dirTier) put(ctx context.Context, name string, r io.Reader, size int64) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	// CreateTemp: O_EXCL, mode 0600, a random suffix, so that concurrent
	// Puts, even of one name, never share a temporary.
	f, err := os.CreateTemp(d.dir, tmpPrefix+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			if tmp != "" {
				os.Remove(tmp)
			}
		}
	}()
	if err := copyExact(ctx, f, r, size); err != nil {
		return err
	}
	// The content must be on disk before the name points to it: a rename
	// that reaches the disk first would leave, after a crash, an object of
	// the right name and size full of zeros.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, name)); err != nil {
		return err
	}
	tmp = ""
	// The rename lives in the directory: without this fsync a crash could
	// bring back the old object, or none, after Put said durable.
	if err := d.syncDir(); err != nil {
		return err
	}
	return nil
}

// copyExact copies exactly size bytes of r to w, in copyBuf pieces,
// checking ctx between them. A reader that ends early is an error: the
// object would be silently short. Data after size bytes is not read.
func copyExact(ctx context.Context, w io.Writer, r io.Reader, size int64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), size-done)]
		n, rerr := io.ReadFull(r, chunk)
		if n > 0 {
			if _, err := w.Write(chunk[:n]); err != nil {
				return err
			}
			done += int64(n)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return shortSource(done, size)
		case rerr != nil:
			return fmt.Errorf("read source after %d of %d bytes: %w", done, size, rerr)
		}
	}
	return nil
}

// shortSource is the error of a reader that ended before size bytes. It
// must not be io.ErrUnexpectedEOF, which minio-go takes for a normal end.
func shortSource(got, size int64) error {
	return fmt.Errorf("source ended after %d of %d bytes", got, size)
}

func (d *dirTier) syncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("fsync directory: %w", serr)
	}
	return cerr
}

func (d *dirTier) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	if err := checkName(name); err != nil {
		return nil, 0, opErr(d, "open", name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, opErr(d, "open", name, err)
	}
	f, err := os.Open(filepath.Join(d.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, opErr(d, "open", name, ErrNotFound)
	}
	if err != nil {
		return nil, 0, opErr(d, "open", name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, 0, opErr(d, "open", name, err)
	}
	// The *os.File itself, so that io.Copy to a file can use
	// copy_file_range.
	return f, fi.Size(), nil
}

func (d *dirTier) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return opErr(d, "remove", name, err)
	}
	if err := ctx.Err(); err != nil {
		return opErr(d, "remove", name, err)
	}
	err := os.Remove(filepath.Join(d.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		// Else a crash could resurrect an object that the caller, told it
		// was removed, no longer accounts for.
		err = d.syncDir()
	}
	if err != nil {
		return opErr(d, "remove", name, err)
	}
	return nil
}

// List reads the directory in batches, so that a tier of millions of
// objects is never held in memory. Temporaries are not listed; those not
// written for tmpMaxAge are removed on the way (see tmpMaxAge).
func (d *dirTier) List(ctx context.Context, fn func(name string) error) error {
	f, err := os.Open(d.dir)
	if err != nil {
		return fmt.Errorf("tier %s: list: %w", d, err)
	}
	defer f.Close()
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tier %s: list: %w", d, err)
		}
		ents, rerr := f.ReadDir(1024)
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, tmpPrefix) {
				d.dropStaleTemp(e)
				continue
			}
			if !ValidName(name) || !e.Type().IsRegular() {
				continue // not an object of ours: lost+found, a subdirectory, ...
			}
			if err := fn(name); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("tier %s: list: %w", d, rerr)
		}
	}
}

// dropStaleTemp removes a temporary left by a Put that died. Best effort:
// a temporary that stays only costs space until the next List.
func (d *dirTier) dropStaleTemp(e fs.DirEntry) {
	fi, err := e.Info()
	if err != nil || !fi.Mode().IsRegular() || time.Since(fi.ModTime()) < tmpMaxAge {
		return
	}
	os.Remove(filepath.Join(d.dir, e.Name()))
}
