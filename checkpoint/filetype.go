package checkpoint

// FileType is what a path is in BACKING now, as Backing.Lstat tells it.
// Answers spell it as a string (Entry.Type: String, with a shadowed path
// reported as gone).
type FileType uint8

const (
	// TypeShadowed: the path cannot exist, because an ancestor is not a
	// directory (any more), or is a symlink that BACKING's access will
	// not follow.
	TypeShadowed FileType = iota
	// TypeGone: the path does not exist.
	TypeGone
	TypeFile
	TypeDir
	TypeSymlink
	// TypeOther: a device, fifo or socket.
	TypeOther
	// TypeUnstated: a BatchLstater did not stat the path (its caller did
	// not need it), and its parent is a directory beneath the root.
	TypeUnstated
)

var fileTypeNames = [...]string{
	TypeShadowed: "", TypeGone: "gone", TypeFile: "file", TypeDir: "dir",
	TypeSymlink: "symlink", TypeOther: "other", TypeUnstated: "",
}

// String is the type as answers spell it: "file", "dir", "symlink",
// "other", "gone", and "" for a shadowed or unstated path.
func (t FileType) String() string {
	if int(t) < len(fileTypeNames) {
		return fileTypeNames[t]
	}
	return "unknown"
}

// exists: the path is there (of any type).
func (t FileType) exists() bool { return t >= TypeFile && t <= TypeOther }
