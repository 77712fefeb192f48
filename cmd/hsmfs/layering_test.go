package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering enforces the package boundaries: only fs imports go-fuse,
// only journal imports badger, only internal/natsexport imports the NATS
// client, only the bench embeds a NATS server (tests, whose imports are
// not listed here, may use both), and checkpoint knows neither FUSE nor
// badger (not even through fs or journal).
func TestLayering(t *testing.T) {
	const (
		mod        = "github.com/hsmfs/hsmfs/"
		fuse       = "github.com/hanwen/go-fuse/"
		badger     = "github.com/dgraph-io/badger/"
		natsClient = "github.com/nats-io/nats.go"
		natsServer = "github.com/nats-io/nats-server/"
	)
	// Direct imports of every package of the module.
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/hsmfs/hsmfs/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	owner := map[string]string{fuse: mod + "fs", badger: mod + "journal",
		natsClient: mod + "internal/natsexport", natsServer: mod + "cmd/hsmfs-bench"}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs++
		for _, imp := range f[1:] {
			for prefix, only := range owner {
				if strings.HasPrefix(imp, prefix) && f[0] != only {
					t.Errorf("%s imports %s: only %s may", f[0], imp, only)
				}
			}
		}
	}
	if pkgs < 5 {
		t.Fatalf("go list found only %d packages", pkgs)
	}
	// checkpoint must not reach FUSE or badger through anything.
	deps, err := exec.Command("go", "list", "-deps", mod+"checkpoint").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(deps)) {
		for _, bad := range []string{fuse, badger, mod + "fs", mod + "journal"} {
			if strings.HasPrefix(d, bad) || d == strings.TrimSuffix(bad, "/") {
				t.Errorf("checkpoint depends on %s", d)
			}
		}
	}
}
