package bench

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/pprof/profile"
)

// heapSplit reads a heap profile (as hsmfs writes it on SIGUSR1, after a
// collection) and splits the bytes in use by who allocated them: the
// inode table (go-fuse's, and hsmfs's fs nodes in it: one of each per
// inode the kernel has looked up and still caches, whatever is pending),
// badger, and the rest, hsmfs's own (the tracker's periods and dedup
// sets, the journal's buffers). The innermost frame of go-fuse, badger
// or hsmfs in a sample's stack decides.
func heapSplit(path string) (fuse, badger, own int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("heap profile %s: %w", path, err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "inuse_space" {
			idx = i
		}
	}
	if idx < 0 {
		return 0, 0, 0, fmt.Errorf("heap profile %s: no inuse_space", path)
	}
	for _, s := range p.Sample {
		v := s.Value[idx]
		switch owner(s) {
		case "go-fuse":
			fuse += v
		case "badger":
			badger += v
		default:
			own += v
		}
	}
	return fuse, badger, own, nil
}

func owner(s *profile.Sample) string {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			switch name := l.Function.Name; {
			case strings.HasPrefix(name, "github.com/hanwen/go-fuse/"),
				strings.HasPrefix(name, "github.com/hsmfs/hsmfs/fs."):
				return "go-fuse"
			case strings.HasPrefix(name, "github.com/dgraph-io/"):
				return "badger"
			case strings.HasPrefix(name, "github.com/hsmfs/"):
				return "hsmfs"
			}
		}
	}
	return "hsmfs"
}
