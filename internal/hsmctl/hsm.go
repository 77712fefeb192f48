package hsmctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The HSM's commands act on one file, so they go to the file itself, as
// virtual extended attributes that the mount answers and never stores:
// setxattr XattrCommand runs a command (the write returns once it is
// durable, or fails with its errno), getxattr XattrState reads the
// file's state as JSON (FileState). Neither is listed by listxattr, so
// copies (rsync -X, cp --preserve=xattr) never see them.
const (
	XattrCommand = "user.hsmfs.hsm"
	XattrState   = "user.hsmfs.state"
)

// HSMVerb is what an HSM command does.
type HSMVerb string

const (
	HSMArchive HSMVerb = "archive"
	HSMRelease HSMVerb = "release"
	HSMRestore HSMVerb = "restore"
	HSMRemove  HSMVerb = "remove"
	HSMSet     HSMVerb = "set"
	HSMClear   HSMVerb = "clear"
)

// HSMCommand is one command on one file.
type HSMCommand struct {
	Verb HSMVerb
	Tier uint32 // archive: the tier (0: the default, the lowest id)
	Flag string // set, clear: norelease or noarchive
}

func (c HSMCommand) String() string {
	switch {
	case c.Verb == HSMArchive && c.Tier != 0:
		return fmt.Sprintf("archive %d", c.Tier)
	case c.Verb == HSMSet || c.Verb == HSMClear:
		return string(c.Verb) + " " + c.Flag
	}
	return string(c.Verb)
}

// ParseHSMCommand parses the value written to XattrCommand.
func ParseHSMCommand(text string) (HSMCommand, error) {
	f := strings.Fields(text)
	bad := func(why string) (HSMCommand, error) {
		return HSMCommand{}, fmt.Errorf("%w: hsm %q: %s", ErrBadCommand, text, why)
	}
	if len(f) == 0 {
		return bad("empty (commands: archive [TIER], release, restore, remove, set|clear norelease|noarchive)")
	}
	c := HSMCommand{Verb: HSMVerb(f[0])}
	switch c.Verb {
	case HSMArchive:
		if len(f) == 2 {
			n, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil || n == 0 {
				return bad("a tier id is a positive number")
			}
			c.Tier = uint32(n)
		} else if len(f) != 1 {
			return bad("archive takes [TIER]")
		}
	case HSMRelease, HSMRestore, HSMRemove:
		if len(f) != 1 {
			return bad(f[0] + " takes no argument")
		}
	case HSMSet, HSMClear:
		if len(f) != 2 || (f[1] != "norelease" && f[1] != "noarchive") {
			return bad(f[0] + " takes norelease or noarchive")
		}
		c.Flag = f[1]
	default:
		return bad("unknown (commands: archive [TIER], release, restore, remove, set|clear norelease|noarchive)")
	}
	return c, nil
}

// FileState is a file's HSM state, as XattrState gives it.
type FileState struct {
	States  []string `json:"states"` // "exists" alone, or Lustre's names: archived, released, dirty, lost, norelease, noarchive
	Tier    uint32   `json:"tier,omitempty"`
	Object  string   `json:"object,omitempty"`
	Size    int64    `json:"size"`                  // the file's size now
	Pending string   `json:"pending,omitempty"`     // a transition in flight
	Archive int64    `json:"archived_at,omitempty"` // unix seconds
	// OpenedAt is when the file was last opened through the mount since
	// it was mounted (unix ns; 0: not since), for hsm run.
	OpenedAt int64 `json:"opened_at_ns,omitempty"`
	// Progress is how many bytes the pending archive or restore has
	// moved.
	Progress int64 `json:"progress_bytes,omitempty"`
}

// Tier is one archive tier, as status lists it.
type Tier struct {
	ID  uint32 `json:"id"`
	URL string `json:"url"`
}

// HSMError is a refused HSM command: its errno, and what that errno
// means for the HSM (the mount's log and ctl's last error have the
// details).
type HSMError struct {
	Path    string
	Command HSMCommand
	Errno   syscall.Errno
}

// hsmReasons say what each errno of an HSM command means.
var hsmReasons = map[syscall.Errno]string{
	syscall.ENXIO:   "no such tier (hsmfs tier add first)",
	syscall.EINVAL:  "not a regular file, or a malformed command",
	syscall.ENODATA: "not archived",
	syscall.ESTALE:  "dirty: changed since its archive (archive it again)",
	syscall.EBUSY:   "open, or another HSM operation on it is running",
	syscall.EAGAIN:  "it changed while it was archived: try again",
	syscall.EPERM:   "refused: released (restore it first), or marked norelease or noarchive",
	syscall.EIO:     "the tier failed or does not hold what was archived (see the mount's log)",
	syscall.ENOTSUP: "not an hsmfs mount, or one without an HSM",
	syscall.EXDEV:   "on a file system mounted inside BACKING: only BACKING's own file system has HSM states",
}

func (e *HSMError) Error() string {
	why := hsmReasons[e.Errno]
	if why == "" {
		why = e.Errno.Error()
	}
	return fmt.Sprintf("hsm %s %s: %s", e.Command, e.Path, why)
}

func (e *HSMError) Unwrap() error { return e.Errno }

// FileDo runs an HSM command on the file at path (through an hsmfs
// mount). It returns once the command is durable.
func FileDo(path string, cmd HSMCommand) error {
	var err error = syscall.EINTR
	for errors.Is(err, syscall.EINTR) { // every command may be given again
		err = syscall.Setxattr(path, XattrCommand, []byte(cmd.String()), 0)
	}
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != syscall.ENOENT {
		return &HSMError{Path: path, Command: cmd, Errno: errno}
	}
	return fmt.Errorf("hsm %s %s: %w", cmd, path, err)
}

// FileStateOf reads the HSM state of the file at path.
func FileStateOf(path string) (FileState, error) {
	var st FileState
	buf := make([]byte, 1024)
	for {
		n, err := syscall.Getxattr(path, XattrState, buf)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, syscall.ENODATA) || errors.Is(err, syscall.ENOTSUP) {
			return st, fmt.Errorf("%s: not on an hsmfs mount with an HSM", path)
		}
		if err != nil {
			return st, fmt.Errorf("%s: %w", path, err)
		}
		if err := json.Unmarshal(buf[:n], &st); err != nil {
			return st, fmt.Errorf("%s: state: %w", path, err)
		}
		return st, nil
	}
}

// NoRecall registers the calling process with the mount: its reads of
// released files, and its children's (rsync), come from the tier without
// restoring them. hsmfs's own consumers call it before each copy (a
// remount forgets it). A mount without an HSM refuses it (EINVAL), which
// the callers ignore.
func (c *Client) NoRecall() error {
	return c.Do(Command{Verb: VerbNoRecall, ID: uint64(os.Getpid())})
}
