package sync

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// rsync's progress2 line in words: bytes and files transferred, paths
// checked of those known.
func TestDescribeProgress(t *testing.T) {
	for line, want := range map[string]string{
		"    123,459 100%  117.74MB/s    0:00:00 (xfr#2, to-chk=5/30)":          "123459 bytes, 2 files transferred, 25 of 30 paths checked (117.74MB/s)",
		"  1,073,741,824  43%   51.20MB/s    0:00:21 (xfr#1, ir-chk=1000/1650)": "1073741824 bytes, 1 file transferred, 650 of 1650 paths checked (51.20MB/s)",
		"          1   0%    0.00kB/s    0:00:00":                               "1 byte (0.00kB/s)",
	} {
		if !isProgress(line) {
			t.Errorf("%q is not taken for progress", line)
		}
		if got := describeProgress(line); got != want {
			t.Errorf("describeProgress(%q) = %q, want %q", line, got, want)
		}
	}
	for _, line := range []string{">f+++++++++ a file", "deleting d/x", "Number of files: 4"} {
		if isProgress(line) {
			t.Errorf("%q is taken for progress", line)
		}
	}
}

// Off a terminal, progress goes out as its own lines, one per interval,
// and never as rsync's redrawn line.
func TestProgressTicker(t *testing.T) {
	var out bytes.Buffer
	tk := &progressTicker{w: &out, cmd: "sync", first: 0, every: time.Hour}
	f := outFilter(&out, &copyStats{})
	f.progress = tk.line
	tk.begin()
	f.Write([]byte("\r      1,234  10%    1.00MB/s    0:00:01 (xfr#1, to-chk=2/3)\r    123,459 100%  117.74MB/s    0:00:00 (xfr#2, to-chk=0/3)\n>f+++ a\n"))
	f.flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "hsmfs sync: copying for 0s: 1234 bytes, 1 file transferred, 1 of 3 paths checked") || lines[1] != ">f+++ a" {
		t.Errorf("printed %q", out.String())
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("a redrawn line went out: %q", out.String())
	}
}
