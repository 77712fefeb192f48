package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering enforces the package boundaries: checkpoint knows neither
// FUSE nor badger, only fs imports go-fuse, only journal imports badger.
func TestLayering(t *testing.T) {
	const (
		fuse   = "github.com/hanwen/go-fuse/"
		badger = "github.com/dgraph-io/badger/"
	)
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/hsmfs/hsmfs/checkpoint", []string{fuse, badger, "github.com/hsmfs/hsmfs/fs", "github.com/hsmfs/hsmfs/journal"}},
		{"github.com/hsmfs/hsmfs/journal", []string{fuse, "github.com/hsmfs/hsmfs/fs"}},
		{"github.com/hsmfs/hsmfs/fs", []string{badger, "github.com/hsmfs/hsmfs/journal"}},
	}
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-deps", r.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", r.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range r.forbidden {
				if strings.HasPrefix(dep, f) || dep == strings.TrimSuffix(f, "/") {
					t.Errorf("%s depends on %s: the layering forbids it", r.pkg, dep)
				}
			}
		}
	}
}
