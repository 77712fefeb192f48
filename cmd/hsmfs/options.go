package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// The -o spellings of hsmfs's own mount flags. mount(8) (through
// mount.fuse3) can only hand a filesystem "-o a,b=c", so every flag of
// `hsmfs mount` has one; they are taken out before the rest goes to FUSE.
type hsmfsOption struct {
	name     string
	hasValue bool // name=VALUE; else a bare switch
	set      func(a *mountArgs, fg *bool, v string) error
}

// duration sets *d from an -o NAME=DURATION.
func duration(d *time.Duration, v string) error {
	x, err := time.ParseDuration(v)
	if err != nil || x < 0 {
		return usagef("bad duration %q (e.g. 24h, 30m)", v)
	}
	*d = x
	return nil
}

// count sets *n from an -o NAME=N.
func count(n *int, v string) error {
	x, err := strconv.Atoi(v)
	if err != nil || x < 0 {
		return usagef("bad number %q (a count, 0 or more)", v)
	}
	*n = x
	return nil
}

var hsmfsOptions = []hsmfsOption{
	{"journal", true, func(a *mountArgs, _ *bool, v string) error { a.Journal = v; return nil }},
	{"log", true, func(a *mountArgs, _ *bool, v string) error { a.Log = v; return nil }},
	{"debug", false, func(a *mountArgs, _ *bool, _ string) error { a.Debug = true; return nil }},
	{"no_passthrough", false, func(a *mountArgs, _ *bool, _ string) error { a.NoPassthru = true; return nil }},
	{"fine_intents", false, func(a *mountArgs, _ *bool, _ string) error { a.FineOnly = true; return nil }},
	{"foreground", false, func(_ *mountArgs, fg *bool, _ string) error { *fg = true; return nil }},
	{"strict", false, func(a *mountArgs, _ *bool, _ string) error { a.Strict = true; return nil }},
	{"no_outside_check", false, func(a *mountArgs, _ *bool, _ string) error { a.NoOutsideCheck = true; return nil }},
	{"consumer_max_age", true, func(a *mountArgs, _ *bool, v string) error { return duration(&a.ConsumerMaxAge, v) }},
	{"metrics", true, func(a *mountArgs, _ *bool, v string) error { a.Metrics = v; return nil }},
	{"consumer_warn_age", true, func(a *mountArgs, _ *bool, v string) error { return duration(&a.ConsumerWarnAge, v) }},
	{"cache_timeout", true, func(a *mountArgs, _ *bool, v string) error { return duration(&a.CacheTimeout, v) }},
	{"max_nodes", true, func(a *mountArgs, _ *bool, v string) error { return count(&a.MaxNodes, v) }},
	{"restore_timeout", true, func(a *mountArgs, _ *bool, v string) error { return duration(&a.RestoreTimeout, v) }},
}

// fstabOnly are words of fstab and mount(8) that tell mount(8) or
// systemd when and by whom to mount, and mean nothing to the filesystem.
// mount.fuse3 drops most of them; hsmfs drops them too, so that an fstab
// option string also works when hsmfs is run by hand or by another
// helper (FUSE would refuse them).
var fstabOnly = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true,
}

func isFstabOnly(name string) bool {
	return fstabOnly[name] || name == "comment" || strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "X-")
}

// applyOptions takes hsmfs's own options out of the -o lists into a and
// fg, drops fstab-only words, and leaves the rest in a.Options for FUSE.
// A misspelt hsmfs option is a usage error (exit 2): handed to FUSE it
// would fail with an obscure "fusermount exited" in the log, and a
// near-miss like "jornal=" must never silently leave the journal at its
// default.
func applyOptions(a *mountArgs, fg *bool, lists []string) error {
	flagJournal, flagLog := a.Journal, a.Log
	var fuse []string
	for _, list := range lists {
		for _, kv := range strings.Split(list, ",") {
			name, value, hasValue := strings.Cut(kv, "=")
			if kv == "" || isFstabOnly(name) {
				continue
			}
			if o := lookupOption(name); o != nil {
				if o.hasValue && (!hasValue || value == "") {
					return usagef("-o %s needs a value: -o %s=...", kv, o.name)
				}
				if !o.hasValue && hasValue {
					return usagef("-o %s takes no value: -o %s", kv, o.name)
				}
				if err := o.set(a, fg, value); err != nil {
					return err
				}
				continue
			}
			if near := nearOption(name); near != "" {
				return usagef("unknown option -o %s; did you mean -o %s?", kv, near)
			}
			fuse = append(fuse, kv)
		}
	}
	if flagJournal != "" && a.Journal != flagJournal {
		return usagef("--journal %s and -o journal=%s disagree", flagJournal, a.Journal)
	}
	if flagLog != "" && a.Log != flagLog {
		return usagef("--log %s and -o log=%s disagree", flagLog, a.Log)
	}
	a.Options = fuse
	return nil
}

func lookupOption(name string) *hsmfsOption {
	for i := range hsmfsOptions {
		if hsmfsOptions[i].name == name {
			return &hsmfsOptions[i]
		}
	}
	return nil
}

// nearOption names the hsmfs option that name is probably a misspelling
// of: the flag's spelling (no-passthrough), another case, or a typo of
// at most two letters in a name of five or more (short names would catch
// FUSE's own: "ro" is two letters from "log").
func nearOption(name string) string {
	norm := strings.ToLower(strings.ReplaceAll(name, "-", "_"))
	for _, o := range hsmfsOptions {
		if norm == o.name || (len(o.name) >= 5 && editDistance(norm, o.name) <= 2) {
			return o.name
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of two short ASCII strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// helperForm reports whether args are "BACKING MOUNTPOINT -o OPTIONS",
// as mount.fuse3 runs a filesystem of type fuse.hsmfs: no command word,
// two positionals. BACKING must look like a path (hold a slash, or be an
// existing directory), so that a mistyped command stays a usage error.
func helperForm(args []string) bool {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") || strings.HasPrefix(args[1], "-") {
		return false
	}
	if _, isCmd := commands[args[0]]; isCmd {
		return false
	}
	if strings.Contains(args[0], "/") {
		return true
	}
	st, err := os.Stat(args[0])
	return err == nil && st.IsDir()
}
