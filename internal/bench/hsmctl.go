package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The control files of an hsmfs mount, as the workloads use them.

// hsmQuery reads MNT/.hsm/changes once (one query) and counts the lines.
func hsmQuery(mnt string) (lines int64, d time.Duration, err error) {
	return hsmQueryPath(filepath.Join(mnt, ".hsm", "changes"))
}

// hsmQueryPath runs one query by reading a changes file.
func hsmQueryPath(p string) (lines int64, d time.Duration, err error) {
	start := time.Now()
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, fmt.Errorf("query: %w", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := f.Read(buf)
		lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.Close()
			return lines, time.Since(start), fmt.Errorf("query: read: %w", rerr)
		}
	}
	err = f.Close()
	return lines, time.Since(start), err
}

// hsmBless blesses the latest query; the write returns once it is durable.
func hsmBless(mnt string) (time.Duration, error) {
	start := time.Now()
	f, err := os.OpenFile(filepath.Join(mnt, ".hsm", "ctl"), os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("bless: %w", err)
	}
	_, err = f.Write([]byte("bless\n"))
	cerr := f.Close()
	if err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("bless: %w", err)
	}
	return time.Since(start), nil
}

func hsmStatus(mnt string) (map[string]any, error) {
	b, err := os.ReadFile(filepath.Join(mnt, ".hsm", "status"))
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("status: %w: %q", err, b)
	}
	return m, nil
}

func statusNum(m map[string]any, k string) float64 {
	if v, ok := m[k].(float64); ok {
		return v
	}
	return -1
}
