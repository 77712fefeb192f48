package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hsmfs/hsmfs/internal/backing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// Config is what a mount needs.
type Config struct {
	Backing    *backing.Tree
	Tracker    *checkpoint.Tracker
	Mountpoint string
	// Options are the -o options, passed on to the kernel
	// (allow_other, default_permissions, ro, ...).
	Options []string
	// UID and GID own the control directory: the user who mounted.
	UID, GID uint32
	// Info fills in the fields of .hsm/status that the tracker does not
	// know (pid, backing, journal, ...).
	Info func(*hsmctl.Status)
	// Header adds fields to the header of changes.json.
	Header func() map[string]any
	// NoPassthrough keeps file I/O in hsmfs instead of handing it to
	// the kernel (slower; for comparison and debugging).
	NoPassthrough bool
	// CacheTimeout is how long the kernel keeps entries, attributes and
	// missing names (0: one second). What hsmfs changes behind the
	// kernel's back it invalidates (cache.go).
	CacheTimeout time.Duration
	// MaxNodes is the node budget: past it hsmfs asks the kernel to
	// forget the oldest nodes it holds (prune.go). 0 keeps every node.
	MaxNodes int
	Debug    bool
	Log      *slog.Logger
	// NameAdded, if set, hears of every name made in BACKING through the
	// mount (or made another inode, by a rename), once it exists: the
	// directory's inode, the name, its inode (internal/outside keeps
	// them). Like NameRemoved, it runs before the kernel hears that the
	// request is done. It must not block.
	NameAdded func(dir uint64, name string, ino uint64, isDir bool)
	// NameRemoved, if set, hears of every name removed from BACKING
	// through the mount (an unlink, a rmdir, the old name of a rename),
	// once it is gone: the directory's inode, the name. It runs before
	// the kernel hears that the request is done, so the changes of one
	// directory reach it in their order. It must not block.
	NameRemoved func(dir uint64, name string)
	// OnJournalError, if set, is called with the errno of every
	// operation that fails because the tracker could not record its
	// intent (for metrics). It runs on the FUSE request's goroutine.
	OnJournalError func(errno syscall.Errno)
	// HSM, if set, restores released files when they are opened and
	// runs the HSM's commands (hsm.go).
	HSM *hsm.Manager
}

var _ = (gofs.NodeOnAdder)((*Node)(nil))

var _ = (gofs.NodeOnForgetter)((*Node)(nil))

// OnAdd builds the control directory once the root is in the tree, and
// counts every other node against the node budget (prune.go).
func (n *Node) OnAdd(ctx context.Context) {
	if n.IsRoot() {
		n.r.ctl.build(ctx, &n.Inode)
		return
	}
	n.r.prune.added(n)
}

// OnForget tells the node budget that go-fuse dropped the node.
func (n *Node) OnForget() { n.r.prune.forgot(n) }

// Server is a live mount. go-fuse's server stays inside fs.
type Server struct {
	srv   *fuse.Server
	prune *pruner
}

// Nodes reports the nodes that the kernel holds, and how many times the
// node budget named one for the kernel to forget (prune.go).
func (s *Server) Nodes() (held int, pruned uint64) { return s.prune.counts() }

// Unmount asks the kernel to unmount; it fails while the mount is busy.
func (s *Server) Unmount() error { return s.srv.Unmount() }

// Wait returns once the mount is gone (unmounted by anyone).
func (s *Server) Wait() { s.srv.Wait() }

// Mount serves BACKING at cfg.Mountpoint and returns once the mount is
// live. Wait on the server; Unmount it to stop.
func Mount(cfg Config) (*Server, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Root{b: cfg.Backing, tr: cfg.Tracker, uid: cfg.UID, gid: cfg.GID, log: log, passthrough: !cfg.NoPassthrough,
		euid: uint32(os.Geteuid()), egid: uint32(os.Getegid()), onJournalError: cfg.OnJournalError, mounted: time.Now(), hsm: cfg.HSM}
	r.prune = newPruner(cfg.MaxNodes)
	r.nameAdded = cfg.NameAdded
	if r.nameAdded == nil {
		r.nameAdded = func(uint64, string, uint64, bool) {}
	}
	r.nameRemoved = cfg.NameRemoved
	if r.nameRemoved == nil {
		r.nameRemoved = func(uint64, string) {}
	}
	r.lroot = &gofs.LoopbackRoot{Path: cfg.Backing.FdPath(), Dev: cfg.Backing.Dev()}
	r.node = &Node{LoopbackNode: &gofs.LoopbackNode{RootData: r.lroot}, r: r}
	r.lroot.RootNode = r.node
	info := cfg.Info
	if info == nil {
		info = func(*hsmctl.Status) {}
	}
	header := cfg.Header
	if header == nil {
		header = func() map[string]any { return nil }
	}
	r.ctl = &ctlState{r: r, info: info, header: header}
	r.tr.SetPathSettler(func() {
		if !r.moves.settle() {
			r.log.Warn("query: go-fuse did not apply a rename to its tree in time; an open file it moved may be re-recorded under its old name", "waited", settleTimeout)
		}
	})

	// hsmfs is the only writer to BACKING (changes made beside it are a
	// documented limit), so the kernel may cache entries, attributes and
	// missing names; cache.go invalidates what changes behind its back.
	timeout := cfg.CacheTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	opts := &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			FsName:      cfg.Backing.Path(),
			Name:        "hsmfs",
			DirectMount: true,
			Debug:       cfg.Debug,
			MaxWrite:    1 << 20,
		},
		UID: cfg.UID,
		GID: cfg.GID,
		// Show mode 0000 as 0000: go-fuse would show 0644 (0755 for a
		// directory), and the kernel would let others in by it.
		NullPermissions: true,
	}
	for _, o := range cfg.Options {
		for _, kv := range strings.Split(o, ",") {
			switch kv {
			case "":
			case "allow_other":
				opts.MountOptions.AllowOther = true
			case "debug":
				opts.MountOptions.Debug = true
			default:
				opts.MountOptions.Options = append(opts.MountOptions.Options, kv)
			}
		}
	}
	// With allow_other, hsmfs serves other users with its own privileges
	// (root's): the kernel must check each access against the mode and
	// owner that BACKING holds, as the backing filesystem would. Without
	// it only the user who mounted gets in, and the checks would cost a
	// GETATTR of the parent directory per rename and unlink (its
	// attributes go stale at every change in it).
	if opts.MountOptions.AllowOther && !slices.Contains(opts.MountOptions.Options, "default_permissions") {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	// Those checks must read BACKING's POSIX ACLs too, as its own file
	// system does: by the mode bits alone, a named entry that denies a
	// user would let it in through the other bits (TestACLs). The kernel
	// then fetches and caches system.posix_acl_access (a getxattr, which
	// BACKING answers), and drops its cache at every setxattr.
	// With ACLs the kernel also leaves the caller's umask to hsmfs
	// (DONT_MASK), which applies it as BACKING's file system does: not
	// beneath a default ACL (callerMode).
	dontMask := slices.Contains(opts.MountOptions.Options, "default_permissions")
	if dontMask {
		opts.MountOptions.EnableAcl = true
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_DONT_MASK
	}
	// HANDLE_KILLPRIV_V2: the kernel stops asking for security.capability
	// before every write and leaves clearing setuid, setgid and
	// capabilities to hsmfs (killpriv.go).
	opts.MountOptions.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
	// ATOMIC_O_TRUNC: O_TRUNC comes with the OPEN (Node.Open truncates)
	// instead of as a SETATTR after it. Otherwise the open of a released
	// file that is about to be emptied would restore it first (hsm.go).
	opts.MountOptions.ExtraCapabilities |= fuse.CAP_ATOMIC_O_TRUNC
	r.kills = &killFlags{RawFileSystem: gofs.NewNodeFS(r.node, opts), dontMask: dontMask}
	srv, err := fuse.NewServer(r.kills, cfg.Mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	if srv.KernelSettings().Flags64()&fuse.CAP_HANDLE_KILLPRIV_V2 == 0 {
		log.Warn("the kernel does not offer HANDLE_KILLPRIV_V2: it asks for security.capability before every write and clears setuid and setgid itself")
	}
	r.prune.root = &r.node.Inode
	go r.prune.run()
	go func() { srv.Wait(); close(r.prune.stop) }()
	return &Server{srv: srv, prune: r.prune}, nil
}
