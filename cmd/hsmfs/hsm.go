package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

const tierUsage = `Usage: hsmfs tier add MOUNTPOINT ID URL
       hsmfs tier rm MOUNTPOINT ID
       hsmfs tier list [--json] MOUNTPOINT

Archive tiers of the mount's HSM (hsmfs hsm). ID is a positive number;
hsm archive uses the lowest unless told. URLs:
  dir:///PATH                      a directory (every object fsynced, with
                                   its directory, before an archive commits)
  s3://BUCKET[/PREFIX]?endpoint=URL[&region=R][&credentials=FILE][&profile=P]
                                   S3 or a compatible server. Credentials
                                   come from the daemon's environment
                                   (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                                   AWS_SESSION_TOKEN) or from an AWS
                                   credentials file, never from the URL

add checks that the tier can be reached and written first. Tiers are kept
in the journal: released files stay restorable across remounts. rm is
refused while the tier holds a file's archive.

Exit codes: 0 done, 1 failed, 2 bad command line.
`

func runTier(args []string) error {
	if len(args) == 0 {
		return usagef("need add, rm or list")
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	case "add", "rm":
		want := map[string]int{"add": 3, "rm": 2}[verb]
		if len(rest) != want {
			return usagef("tier %s takes MOUNTPOINT ID%s", verb, map[string]string{"add": " URL", "rm": ""}[verb])
		}
		id, err := strconv.ParseUint(rest[1], 10, 32)
		if err != nil || id == 0 {
			return usagef("a tier ID is a positive number, not %q", rest[1])
		}
		c, err := hsmctl.Open(rest[0], "")
		if err != nil {
			return err
		}
		cmd := hsmctl.Command{Verb: hsmctl.VerbTierRemove, Tier: uint32(id)}
		if verb == "add" {
			cmd = hsmctl.Command{Verb: hsmctl.VerbTierAdd, Tier: uint32(id), URL: rest[2]}
		}
		return commandErr(c.Do(cmd))
	case "list":
		var asJSON bool
		mnt, extra, err := oneMountpoint("tier list", rest, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
		if err != nil {
			return err
		}
		if len(extra) != 0 {
			return usagef("tier list takes one MOUNTPOINT")
		}
		c, err := hsmctl.Open(mnt, "")
		if err != nil {
			return err
		}
		st, _, err := c.Status()
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(os.Stdout).Encode(st.Tiers)
		}
		for _, t := range st.Tiers {
			fmt.Printf("%d\t%s\n", t.ID, t.URL)
		}
		return nil
	}
	return usagef("unknown tier command %q (add, rm, list)", verb)
}

const hsmUsage = `Usage: hsmfs hsm archive [--tier ID] [--jobs N] PATH...
       hsmfs hsm release PATH...
       hsmfs hsm restore PATH...
       hsmfs hsm remove PATH...
       hsmfs hsm state [--json] PATH...
       hsmfs hsm set|clear norelease|noarchive PATH...
       hsmfs hsm run [options] MOUNTPOINT   (the policy daemon, below)

The HSM of an hsmfs mount; PATHs are regular files through the mount.
Commands on several PATHs run --jobs (-j) at a time (default 32: concurrent
commands share the journal's syncs).
  archive   copy the content to a tier (the lowest ID unless --tier),
            verified (CRC-32C); it commits only if the file did not change
            meanwhile. An archived, clean file is left as it is
  release   free the local blocks of an archived, clean file that no one
            has open; size, inode, links, xattrs, mode, owner and times stay
  restore   bring a released file's content back ahead of use (an open
            through the mount does it anyway, and blocks until it is back)
  remove    drop the tier copy (only of a resident file)
  state     print the states: exists, or archived, released, dirty, lost,
            norelease, noarchive (Lustre HSM's), with the tier and size
  set, clear
            mark a file norelease (never released) or noarchive

On a terminal, a line on stderr shows how far a long command has come.
Opening an archived file for writing, or truncating it, makes it dirty;
stat, ls, du and readdir never restore. Every transition is journaled,
so a crash at any point loses no content (docs/hsm.md).

Exit codes: 0 done for every PATH, 1 failed for some (each reason on
stderr), 2 bad command line.
`

func runHSM(args []string) error {
	if len(args) == 0 {
		return usagef("need archive, release, restore, remove, state, set or clear")
	}
	verb, rest := args[0], args[1:]
	if verb == "-h" || verb == "-help" || verb == "--help" || verb == "help" {
		return flag.ErrHelp
	}
	if verb == "run" {
		return runHSMRun(rest)
	}
	fs := flag.NewFlagSet("hsm "+verb, flag.ContinueOnError)
	tierID := fs.Uint("tier", 0, "")
	asJSON := fs.Bool("json", false, "")
	jobs := fs.Int("jobs", 32, "")
	fs.IntVar(jobs, "j", 32, "")
	paths, err := parseInterspersed(fs, rest)
	if err != nil {
		return err
	}
	cmd := hsmctl.HSMCommand{Verb: hsmctl.HSMVerb(verb), Tier: uint32(*tierID)}
	switch cmd.Verb {
	case hsmctl.HSMSet, hsmctl.HSMClear:
		if len(paths) == 0 {
			return usagef("hsm %s takes norelease or noarchive, and PATH...", verb)
		}
		cmd.Flag, paths = paths[0], paths[1:]
	case "state":
		return forEach(paths, 1, func(p string) error { return printState(p, *asJSON) })
	}
	if *jobs < 1 {
		return usagef("--jobs takes a positive number")
	}
	if _, err := hsmctl.ParseHSMCommand(cmd.String()); err != nil {
		return usagef("%v", strings.TrimPrefix(err.Error(), hsmctl.ErrBadCommand.Error()+": "))
	}
	var done atomic.Int64
	if isTerminal(os.Stderr) && len(paths) > 0 {
		defer showProgress(cmd, paths, &done)()
	}
	return forEach(paths, *jobs, func(p string) error {
		defer done.Add(1)
		return hsmctl.FileDo(p, cmd)
	})
}

// showProgress prints, on a terminal, a line that says how far a long
// command has come, once a second: the files done, and for one file the
// bytes that its archive or restore has moved. The returned func ends it.
func showProgress(cmd hsmctl.HSMCommand, paths []string, done *atomic.Int64) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		shown := false
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				if shown {
					fmt.Fprintln(os.Stderr)
				}
				return
			case <-t.C:
			}
			line := fmt.Sprintf("hsm %s: %d of %d files done", cmd.Verb, done.Load(), len(paths))
			if len(paths) == 1 {
				if st, err := hsmctl.FileStateOf(paths[0]); err == nil && st.Pending != "" {
					line = fmt.Sprintf("hsm %s %s: %s of %s", cmd.Verb, paths[0], humanSize(st.Progress), humanSize(st.Size))
				}
			}
			fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
			shown = true
		}
	}()
	return func() { close(quit); <-finished }
}

// forEach runs do for every path, jobs at a time, reports each failure
// on stderr, and fails if any did. Concurrent commands share the
// journal's syncs, so many small files go much faster than one by one.
func forEach(paths []string, jobs int, do func(string) error) error {
	if len(paths) == 0 {
		return usagef("need PATH...")
	}
	var mu sync.Mutex // guards failed and stderr
	failed := 0
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(jobs, len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if err := do(p); err != nil {
					mu.Lock()
					fmt.Fprintln(os.Stderr, "hsmfs:", err)
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range paths {
		next <- p
	}
	close(next)
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("%d of %d failed", failed, len(paths))
	}
	return nil
}

// printState prints one line per file: PATH: STATES tier=ID size=SIZE.
func printState(path string, asJSON bool) error {
	st, err := hsmctl.FileStateOf(path)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(struct {
			Path string `json:"path"`
			hsmctl.FileState
		}{path, st})
	}
	line := path + ": " + strings.Join(st.States, " ")
	if st.Tier != 0 {
		line += fmt.Sprintf(" tier=%d", st.Tier)
	}
	line += " size=" + humanSize(st.Size)
	if st.Pending != "" {
		line += " pending=" + st.Pending
	}
	fmt.Println(line)
	return nil
}

// humanSize is size in the units of ls -h.
func humanSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10)
	}
	f, u := float64(n), -1
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.1f%c", f, units[u])
}
