// Package hsmfs_test holds the module's architecture, as a test.
//
// The layers, and what each may import besides the standard library:
//
//   - checkpoint: the period state machine. Nothing of this module's, and
//     no third-party package (not even through another package).
//   - journal: badger (the only package that may), checkpoint (the
//     Store it implements), and internal/rate (the loop of its badger
//     reference for the bench). Never fs.
//   - fs: go-fuse (the only package that may), checkpoint, x/sys. Never
//     journal: the tracker reaches the journal through checkpoint.Store.
//   - internal/hsmctl: the control protocol of .hsm, which every client
//     and fs speak; the standard library only, so that any program can
//     use the client without the tracker's or FUSE's weight.
//   - internal/...: one concern each. internal/metrics alone imports the
//     Prometheus client, internal/holders alone procfs, internal/natsexport
//     alone the NATS client.
//   - cmd/hsmfs: wiring (flags, signals, exit codes); cmd/hsmfs-bench: a
//     main for internal/bench, which may embed a NATS server for its
//     export row.
//
// Tests' own imports are not listed here: they may use real servers.
package hsmfs_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLayering enforces the package boundaries: only fs imports go-fuse,
// only journal imports badger, only internal/metrics (and cmd/hsmfs,
// which wires it) imports Prometheus's client, only internal/holders
// reads /proc through procfs, only internal/natsexport imports the NATS
// client, only internal/bench embeds a NATS server (tests, whose imports are
// not listed here, may use them), and checkpoint knows none of them
// (not even through fs, journal or metrics).
func TestLayering(t *testing.T) {
	const (
		mod        = "github.com/hsmfs/hsmfs/"
		fuse       = "github.com/hanwen/go-fuse/"
		badger     = "github.com/dgraph-io/badger/"
		prom       = "github.com/prometheus/client_" // client_golang, client_model
		procfs     = "github.com/prometheus/procfs"
		natsClient = "github.com/nats-io/nats.go"
		natsServer = "github.com/nats-io/nats-server/"
	)
	// Direct imports of every package of the module.
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/hsmfs/hsmfs/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	owners := map[string][]string{
		fuse:       {mod + "fs"},
		badger:     {mod + "journal"},
		prom:       {mod + "internal/metrics", mod + "cmd/hsmfs"},
		procfs:     {mod + "internal/holders"},
		natsClient: {mod + "internal/natsexport"},
		natsServer: {mod + "internal/bench"},
	}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs++
		for _, imp := range f[1:] {
			for prefix, only := range owners {
				if strings.HasPrefix(imp, prefix) && !slices.Contains(only, f[0]) {
					t.Errorf("%s imports %s: only %s may", f[0], imp, strings.Join(only, " and "))
				}
			}
		}
	}
	if pkgs < 5 {
		t.Fatalf("go list found only %d packages", pkgs)
	}
	// fs and journal never meet: fs records through checkpoint, and
	// journal is a checkpoint.Store.
	for _, pair := range [][2]string{{"fs", "journal"}, {"journal", "fs"}} {
		deps, err := exec.Command("go", "list", "-deps", mod+pair[0]).Output()
		if err != nil {
			t.Fatalf("go list -deps: %v", err)
		}
		for _, d := range strings.Fields(string(deps)) {
			if d == mod+pair[1] {
				t.Errorf("%s depends on %s", pair[0], pair[1])
			}
		}
	}
	// hsmctl is the standard library's only.
	deps, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", mod+"internal/hsmctl").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(deps)) {
		if d != mod+"internal/hsmctl" {
			t.Errorf("internal/hsmctl depends on %s: it may use the standard library only", d)
		}
	}
	// checkpoint must not reach FUSE, badger or Prometheus through
	// anything.
	deps, err = exec.Command("go", "list", "-deps", mod+"checkpoint").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(deps)) {
		for _, bad := range []string{fuse, badger, prom, mod + "fs", mod + "journal", mod + "internal/metrics"} {
			if strings.HasPrefix(d, bad) || d == strings.TrimSuffix(bad, "/") {
				t.Errorf("checkpoint depends on %s", d)
			}
		}
	}
}
