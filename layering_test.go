// Package hsmfs_test holds the module's architecture, as a test.
//
// The rooms, and what each may import besides the standard library (the
// table in TestLayering is the full list; a package missing from it
// fails the test, so that a new room is placed on purpose):
//
//   - checkpoint: the period state machine. Nothing but the standard
//     library, not even through another package.
//   - journal: badger (the only package that may) and checkpoint (the
//     Store it implements). Never fs.
//   - fs: go-fuse (the only package that may), checkpoint, the control
//     protocol, x/sys. Never journal: the tracker reaches the journal
//     through checkpoint.Store.
//   - internal/...: the packages that ship, one concern each.
//     internal/backing is BACKING reached through fds, with no FUSE.
//     internal/hsmctl (the control protocol of .hsm, which every client
//     and fs speak) and internal/manpage use the standard library only,
//     so that any program can use the client without the tracker's or
//     FUSE's weight; internal/metrics alone imports the Prometheus client,
//     internal/holders alone procfs, internal/natsexport alone the NATS
//     client, internal/mountinfo alone moby's mountinfo (among what
//     ships: the bench reads mount tables with it too). internal/hsm is
//     the HSM's state machine (archive, release, restore, recovery),
//     with neither FUSE nor badger; internal/tier, the archive tiers,
//     alone imports the S3 client.
//   - internal/lifecycle: the daemon's lifecycle, the order of a mount's
//     steps written once (Serve), and the wiring of the packages.
//   - cmd/hsmfs: flags, subcommands, exit codes, the re-execution of the
//     daemon and systemd's notifications.
//   - tools/...: bench and test tooling (the bench and its main, the
//     rename storm, the POSIX differential test, the rate loop), and the
//     test kits (checkpoint/checkpointtest: the Store contract). No
//     package that ships imports them, even through another package.
//
// Tests' own imports are not listed here: they may use real servers.
package hsmfs_test

import (
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const (
	mod        = "github.com/hsmfs/hsmfs/"
	fuse       = "github.com/hanwen/go-fuse/"
	badger     = "github.com/dgraph-io/badger/"
	xsys       = "golang.org/x/sys/"
	prom       = "github.com/prometheus/client_" // client_golang, client_model
	procfs     = "github.com/prometheus/procfs"
	natsClient = "github.com/nats-io/nats.go"
	natsServer = "github.com/nats-io/nats-server/"
	systemd    = "github.com/coreos/go-systemd/"
	moby       = "github.com/moby/sys/mountinfo"
	pprof      = "github.com/google/pprof/"
	minio      = "github.com/minio/minio-go/"
)

// allowed is, for every package of the module, the imports it may have
// besides the standard library: module packages (without the module's
// prefix) and third-party prefixes.
var allowed = map[string][]string{
	"checkpoint": {},
	// The Store contract (RunStoreTests), tooling that journal's and
	// checkpoint's tests run.
	"checkpoint/checkpointtest": {"checkpoint"},
	"journal":                   {"checkpoint", badger, xsys},
	"fs":                        {"checkpoint", "internal/backing", "internal/hsm", "internal/hsmctl", fuse, xsys},
	"internal/backing":          {"checkpoint", "internal/hsmctl", xsys},
	"internal/hsmctl":           {},
	"internal/manpage":          {},
	"internal/holders":          {procfs, xsys},
	// The HSM's transitions and recovery; no FUSE, no badger.
	"internal/hsm": {"internal/tier", xsys},
	// The archive tiers; the S3 client is theirs alone.
	"internal/tier": {minio, xsys},
	// hsm run, the HSM's policy daemon: a client of the mount.
	"internal/hsmrun":    {"internal/hsmctl"},
	"internal/metrics":   {"checkpoint", "journal", prom, xsys},
	"internal/mountinfo": {moby, xsys},
	// Export and follow; follow runs rsync as hsmfs sync does.
	"internal/natsexport": {"internal/hsmctl", "internal/sync", natsClient, xsys},
	"internal/outside":    {xsys},
	"internal/sync":       {"internal/hsmctl", xsys},
	// The daemon's lifecycle: the order of a mount's steps, and the
	// wiring of tracker, journal, BACKING, fs, metrics and the outside
	// check.
	"internal/lifecycle": {"checkpoint", "journal", "fs", "internal/backing", "internal/holders", "internal/hsm", "internal/hsmctl",
		"internal/metrics", "internal/mountinfo", "internal/outside", xsys},
	// Flags, subcommands, the re-executed daemon's pipe, systemd.
	"cmd/hsmfs": {"checkpoint", "journal", "internal/holders", "internal/hsmctl", "internal/hsmrun", "internal/lifecycle", "internal/manpage",
		"internal/metrics", "internal/mountinfo", "internal/natsexport", "internal/sync", systemd, xsys},
	".":                     {}, // this test
	"e2e":                   {}, // tests only, which run the built binary
	"tools/rate":            {},
	"tools/storm":           {xsys},
	"tools/posixdiff":       {xsys},
	"tools/bench":           {"internal/hsmctl", "internal/natsexport", "journal", "tools/rate", "tools/storm", moby, natsServer, pprof, xsys},
	"tools/cmd/hsmfs-bench": {"tools/bench"},
}

// stdOnly are the packages that must not reach anything but the
// standard library, through any package.
var stdOnly = []string{"checkpoint", "internal/hsmctl", "internal/manpage", "tools/rate"}

// TestLayering enforces the rooms: each package's direct imports are in
// its row of allowed, so that a third-party package has the owner the
// table gives it (badger journal's, go-fuse fs's, and so on); checkpoint
// and the control protocol reach only the standard library; fs and
// journal never meet; and no package that ships depends on tools/.
func TestLayering(t *testing.T) {
	imports := goLines(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...")
	var pkgs []string
	for _, line := range imports {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0]+"/", mod)
		pkg = strings.TrimSuffix(pkg, "/")
		if pkg == "" {
			pkg = "."
		}
		pkgs = append(pkgs, pkg)
		allow, ok := allowed[pkg]
		if !ok {
			t.Errorf("%s is not in the layering table: place it (layering_test.go)", pkg)
			continue
		}
		for _, imp := range f[1:] {
			if isStd(imp) {
				continue
			}
			if !slices.ContainsFunc(allow, func(a string) bool {
				return imp == mod+a || strings.Contains(a, ".") && strings.HasPrefix(imp, a)
			}) {
				t.Errorf("%s imports %s, which its row of the layering table does not allow", pkg, imp)
			}
		}
	}
	for pkg := range allowed {
		if !slices.Contains(pkgs, pkg) {
			t.Errorf("the layering table names %s, which go list does not find", pkg)
		}
	}
	for _, pkg := range stdOnly {
		for _, d := range goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", mod+pkg) {
			if d != mod+pkg {
				t.Errorf("%s depends on %s: it may use the standard library only", pkg, d)
			}
		}
	}
	for _, pair := range [][2]string{{"fs", "journal"}, {"journal", "fs"}} {
		if slices.Contains(goList(t, "-deps", mod+pair[0]), mod+pair[1]) {
			t.Errorf("%s depends on %s: fs records through checkpoint, and journal is a checkpoint.Store", pair[0], pair[1])
		}
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		if isTooling(pkg) {
			continue
		}
		for _, d := range goList(t, "-deps", strings.TrimSuffix(mod+pkg, "/.")) {
			if strings.HasPrefix(d, mod) && isTooling(strings.TrimPrefix(d, mod)) {
				t.Errorf("%s, which ships, depends on the tooling package %s", pkg, d)
			}
		}
	}
}

// goList is the output of go list, one word each.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	return strings.Fields(strings.Join(goLines(t, args...), "\n"))
}

// goLines is the output of go list, one line each.
func goLines(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", strings.Join(args, " "), err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// isTooling: bench and test tooling, which nothing that ships may use:
// tools/..., and a test kit (a package named ...test, as
// checkpoint/checkpointtest).
func isTooling(pkg string) bool {
	return strings.HasPrefix(pkg, "tools/") || strings.HasSuffix(pkg, "test")
}

// isStd: a standard library import path has no dot in its first element.
func isStd(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}
