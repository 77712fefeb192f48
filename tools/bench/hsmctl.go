package bench

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// The control files of an hsmfs mount, as the workloads use them
// (through hsmctl, as every client of the project does).

// hsmQuery runs one query of the mount's plain answer and counts the
// lines.
func hsmQuery(mnt string) (lines int64, d time.Duration, err error) {
	return hsmQueryFor(mnt, "")
}

// hsmQueryFor runs one query of a consumer's plain answer.
func hsmQueryFor(mnt, consumer string) (lines int64, d time.Duration, err error) {
	start := time.Now()
	c, err := hsmctl.Open(mnt, consumer)
	if err != nil {
		return 0, 0, err
	}
	f, err := c.QueryPlain()
	if err != nil {
		return 0, 0, err
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

// hsmBless blesses the latest query; it returns once it is durable.
func hsmBless(mnt string) (time.Duration, error) {
	start := time.Now()
	c, err := hsmctl.Open(mnt, "")
	if err != nil {
		return 0, err
	}
	// A plain bless: the bench also measures older binaries, which know
	// no "by".
	if err := c.Bless(0, false, ""); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func hsmStatus(mnt string) (*hsmctl.Status, error) {
	c, err := hsmctl.Open(mnt, "")
	if err != nil {
		return nil, err
	}
	st, _, err := c.Status()
	return st, err
}
