// Package posixdiff runs a seeded random sequence of file system calls
// beneath a directory and writes a transcript of what each call returned
// and what the paths it touched look like afterwards. Run twice with the
// same seed, once in a plain directory and once through a mount, the two
// transcripts must be equal: any difference is a place where the mount
// does not behave as the backing filesystem does.
//
// The sequence depends on the seed and the phase alone, never on the
// results, so both runs make the same calls. Each phase runs in a process
// of its own, as root or as an unprivileged user (the caller chooses), and
// a run is several phases over the same tree: root creates files of every
// kind and mode and hands some to other users, unprivileged users then
// meet the permission checks, the setuid and setgid clearing on write,
// truncate and chown, and the group rules of setgid directories.
//
// Every path is reached from the phase's root with one *at call per
// component (never a whole path), so trees deeper than PATH_MAX are walked
// as the kernel allows: by relative steps.
//
// The transcript compares the file type, mode, owner, group, size, link
// count and symlink target of each path, and at the end of a phase the
// whole tree with its user xattrs and file capabilities. Times are left out: they differ between
// any two runs.
package posixdiff
