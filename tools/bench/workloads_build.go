package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// --- build ---

func setupBuild(ctx context.Context, e *Env) error {
	_, err := e.goTarball(ctx)
	return err
}

func sampleBuild(ctx context.Context, e *Env, t *Target, rep int) (map[string]float64, error) {
	tarball, err := e.goTarball(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(t.Dir, fmt.Sprintf("build-%d", rep))
	tree := filepath.Join(dir, "go")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return nil, err
	}
	unix.Sync()
	out := map[string]float64{}
	run := func(id string, c *exec.Cmd) error {
		start := time.Now()
		b, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c.Args, " "), err, lastLines(string(b), 5))
		}
		out[id] = time.Since(start).Seconds()
		return nil
	}
	if err := run("build.unpack", exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", tree)); err != nil {
		return nil, err
	}
	// The toolchain's binaries (compile, link, asm) are not part of the
	// tree; everything they read and write is.
	if err := os.Symlink(filepath.Join(e.goroot, "pkg"), filepath.Join(tree, "pkg")); err != nil {
		return nil, err
	}
	for _, d := range []string{"gocache", "gotmp", "gopath"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(dir, "hello")
	c := exec.CommandContext(ctx, e.goBin, "build", "-o", bin, ".")
	if e.sz.buildSubset {
		// The short run compiles a few small packages and links nothing.
		c = exec.CommandContext(ctx, e.goBin, append([]string{"build"}, shortBuildPkgs...)...)
	}
	c.Dir = filepath.Join(tree, "src", "benchhello")
	c.Env = append(cleanGoEnv(),
		"GOROOT="+tree, "GOCACHE="+filepath.Join(dir, "gocache"), "GOTMPDIR="+filepath.Join(dir, "gotmp"),
		"GOPATH="+filepath.Join(dir, "gopath"), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOENV=off", "GOFLAGS=")
	if err := run("build.compile", c); err != nil {
		return nil, err
	}
	if !e.sz.buildSubset {
		if b, err := exec.Command(bin).CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "hi" {
			return nil, fmt.Errorf("the built program does not work: %v %q", err, b)
		}
	}
	if err := run("build.delete", exec.CommandContext(ctx, "rm", "-rf", dir)); err != nil {
		return nil, err
	}
	out["build.total"] = out["build.unpack"] + out["build.compile"] + out["build.delete"]
	return out, nil
}

// cleanGoEnv is the environment without the variables that would change
// what go build does.
func cleanGoEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "CGO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

const helloMain = "package main\n\nfunc main() { println(\"hi\") }\n"

// shortBuildPkgs is what the short run compiles: 7 packages, no runtime.
var shortBuildPkgs = []string{"internal/abi", "internal/bytealg", "math", "unicode/utf8"}

// goTarball makes, once, the tarball of the Go source tree that the build
// workload unpacks: VERSION, go.env and src/ of the installed toolchain,
// plus src/benchhello, a program with no imports (its build compiles the
// runtime and its dependencies, ~30 packages, from the tree). The short
// run's tarball holds only the directories of shortBuildPkgs and their
// dependencies.
func (e *Env) goTarball(ctx context.Context) (string, error) {
	kind := "full"
	if e.sz.buildSubset {
		kind = "subset"
	}
	p := filepath.Join(e.cfg.cacheDir, fmt.Sprintf("go-src-%s-%s.tar", e.goVersion, kind))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(e.cfg.cacheDir, 0o755); err != nil {
		return "", err
	}
	staging, err := os.MkdirTemp(e.cfg.cacheDir, "staging.")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	if err := os.MkdirAll(filepath.Join(staging, "src", "benchhello"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(staging, "src", "benchhello", "main.go"), []byte(helloMain), 0o644); err != nil {
		return "", err
	}
	tmpf, err := os.CreateTemp(e.cfg.cacheDir, filepath.Base(p)+".tmp.")
	if err != nil {
		return "", err
	}
	tmpf.Close()
	tmp := tmpf.Name()
	args := []string{"-cf", tmp}
	if kind == "full" {
		args = append(args, "-C", e.goroot, "VERSION", "go.env", "src")
	} else {
		c := exec.CommandContext(ctx, e.goBin, append([]string{"list", "-deps", "-f", "{{.Dir}}"}, shortBuildPkgs...)...)
		c.Env = append(cleanGoEnv(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOENV=off")
		out, err := c.Output()
		if err != nil {
			return "", fmt.Errorf("go list -deps: %w", err)
		}
		files := []string{"VERSION", "go.env", "src/go.mod"}
		for _, d := range strings.Fields(string(out)) {
			ents, err := os.ReadDir(d)
			if err != nil {
				return "", err
			}
			r, err := filepath.Rel(e.goroot, d)
			if err != nil {
				return "", err
			}
			for _, de := range ents {
				if de.Type().IsRegular() {
					files = append(files, filepath.Join(r, de.Name()))
				}
			}
		}
		list := filepath.Join(staging, "files")
		if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
			return "", err
		}
		args = append(args, "--no-recursion", "-C", e.goroot, "-T", list)
	}
	args = append(args, "-C", staging, "src/benchhello", "src/benchhello/main.go")
	fmt.Printf("  making the source tarball %s (once)\n", p)
	if out, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("tar: %v: %s", err, out)
	}
	return p, os.Rename(tmp, p)
}
