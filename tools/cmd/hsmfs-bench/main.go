// Command hsmfs-bench measures hsmfs against the raw BACKING directory and
// against go-fuse's example loopback filesystem, interleaved in one run
// (tools/bench). scripts/bench.sh (make bench, make bench-short) is the
// usual way to run it; docs/performance.md explains the workloads.
package main

import (
	"os"

	"github.com/hsmfs/hsmfs/tools/bench"
)

func main() { os.Exit(bench.Main(os.Args[1:])) }
