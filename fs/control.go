package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hsmfs/hsmfs/checkpoint"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
)

// The control directory .hsm: changes, changes.json, ctl and status. It
// is not in the root's listing (so ls, rsync and backup tools never run a
// query by accident) and is reached by name. Its content is made per open
// and served with direct I/O, so that the size 0 that stat reports does
// not cut reads short. Nothing in it can be created, removed, renamed,
// linked or chmod'ed: EPERM.

// ctlInoBase keeps the control nodes' inode numbers away from BACKING's.
const ctlInoBase = 1 << 62

type ctlKind int

const (
	kindChanges ctlKind = iota
	kindChangesJSON
	kindCtl
	kindStatus
)

var ctlFiles = []struct {
	name string
	kind ctlKind
	mode uint32
}{
	{"changes", kindChanges, 0400},
	{"changes.json", kindChangesJSON, 0400},
	{"ctl", kindCtl, 0600},
	{"status", kindStatus, 0444},
}

// ctlState is shared by the control nodes.
type ctlState struct {
	r         *Root
	dir       *gofs.Inode
	consumers *gofs.Inode          // .hsm/consumers
	info      func(*hsmctl.Status) // pid, backing, mountpoint, journal, ...
	// header adds fields to the header of changes.json (the outside
	// check at mount).
	header func() map[string]any

	mu      sync.Mutex // guards lastErr
	lastErr string
}

func (c *ctlState) setErr(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.lastErr = msg
	c.mu.Unlock()
	c.r.log.Warn("control: " + msg)
}

// build creates the persistent control inodes (once, from the root's OnAdd).
func (c *ctlState) build(ctx context.Context, root *gofs.Inode) {
	d := &ctlDir{c: c}
	c.dir = root.NewPersistentInode(ctx, d, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ctlInoBase})
	for i, f := range ctlFiles {
		n := &ctlNode{c: c, kind: f.kind, mode: f.mode}
		ch := c.dir.NewPersistentInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ctlInoBase + 1 + uint64(i)})
		c.dir.AddChild(f.name, ch, false)
	}
	c.consumers = c.dir.NewPersistentInode(ctx, &consumersDir{ctlDir: ctlDir{c: c}},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ctlInoBase + 1 + uint64(len(ctlFiles))})
	c.dir.AddChild("consumers", c.consumers, false)
}

func (c *ctlState) lookupDir(ctx context.Context, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c.attr(&out.Attr, syscall.S_IFDIR|0555)
	return c.dir, 0
}

// attr gives every control node the mount's time: ls shows when the
// mount began rather than 1970.
func (c *ctlState) attr(a *fuse.Attr, mode uint32) {
	a.Mode = mode
	a.Uid, a.Gid = c.r.uid, c.r.gid
	a.Nlink = 1
	a.Size = 0
	t := c.r.mounted
	a.SetTimes(&t, &t, &t)
}

// owner reports whether the caller may read changes and write ctl.
func (c *ctlState) owner(ctx context.Context) bool {
	caller, ok := fuse.FromContext(ctx)
	return !ok || caller.Uid == 0 || caller.Uid == c.r.uid
}

// ctlDir is .hsm itself.
type ctlDir struct {
	gofs.Inode
	c *ctlState
}

var (
	_ = (gofs.NodeGetattrer)((*ctlDir)(nil))
	_ = (gofs.NodeSetattrer)((*ctlDir)(nil))
	_ = (gofs.NodeMkdirer)((*ctlDir)(nil))
	_ = (gofs.NodeCreater)((*ctlDir)(nil))
	_ = (gofs.NodeMknoder)((*ctlDir)(nil))
	_ = (gofs.NodeSymlinker)((*ctlDir)(nil))
	_ = (gofs.NodeLinker)((*ctlDir)(nil))
	_ = (gofs.NodeUnlinker)((*ctlDir)(nil))
	_ = (gofs.NodeRmdirer)((*ctlDir)(nil))
	_ = (gofs.NodeRenamer)((*ctlDir)(nil))
	_ = (gofs.NodeSetxattrer)((*ctlDir)(nil))
	_ = (gofs.NodeRemovexattrer)((*ctlDir)(nil))
)

func (d *ctlDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.c.attr(&out.Attr, syscall.S_IFDIR|0555)
	return 0
}
func (d *ctlDir) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}
func (d *ctlDir) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *ctlDir) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EPERM
}
func (d *ctlDir) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *ctlDir) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *ctlDir) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *ctlDir) Unlink(context.Context, string) syscall.Errno { return syscall.EPERM }
func (d *ctlDir) Rmdir(context.Context, string) syscall.Errno  { return syscall.EPERM }
func (d *ctlDir) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EPERM
}
func (d *ctlDir) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EPERM
}
func (d *ctlDir) Removexattr(context.Context, string) syscall.Errno { return syscall.EPERM }

// ctlNode is one of the control files.
type ctlNode struct {
	gofs.Inode
	c        *ctlState
	kind     ctlKind
	mode     uint32
	consumer string // "" for the default consumer (.hsm itself)
}

var (
	_ = (gofs.NodeGetattrer)((*ctlNode)(nil))
	_ = (gofs.NodeSetattrer)((*ctlNode)(nil))
	_ = (gofs.NodeOpener)((*ctlNode)(nil))
	_ = (gofs.NodeSetxattrer)((*ctlNode)(nil))
	_ = (gofs.NodeRemovexattrer)((*ctlNode)(nil))
)

func (n *ctlNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.c.attr(&out.Attr, syscall.S_IFREG|n.mode)
	return 0
}

// Setattr allows only the truncation that `echo bless > ctl` makes.
func (n *ctlNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	_, mok := in.GetMode()
	_, uok := in.GetUID()
	_, gok := in.GetGID()
	sz, sok := in.GetSize()
	if mok || uok || gok || (sok && (n.kind != kindCtl || sz != 0)) {
		return syscall.EPERM
	}
	if sok && !n.c.owner(ctx) {
		return syscall.EACCES
	}
	n.c.attr(&out.Attr, syscall.S_IFREG|n.mode)
	return 0
}

func (n *ctlNode) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EPERM
}
func (n *ctlNode) Removexattr(context.Context, string) syscall.Errno { return syscall.EPERM }

func (n *ctlNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	switch n.kind {
	case kindChanges, kindChangesJSON:
		if write {
			return nil, 0, syscall.EACCES
		}
		if !n.c.owner(ctx) {
			return nil, 0, syscall.EACCES
		}
		// The plain answer shows paths only: the query stats no more
		// than those need.
		ans, err := n.c.r.tr.QueryWith(checkpoint.QueryOptions{Consumer: n.consumer, PathsOnly: n.kind == kindChanges,
			Abandoned: readerGone(ctx)})
		if err != nil {
			if !errors.Is(err, checkpoint.ErrAbandoned) { // no one is left to tell
				n.c.setErr("query failed: %v", err)
			}
			return nil, 0, toErrno(err)
		}
		format, hdr := checkpoint.FormatPlain, map[string]any(nil)
		if n.kind == kindChangesJSON {
			format, hdr = checkpoint.FormatJSON, n.c.header()
			if n.consumer != "" {
				hdr = maps.Clone(hdr)
				if hdr == nil {
					hdr = map[string]any{}
				}
				hdr["consumer"] = n.consumer
			}
		}
		// Rendered as it is read: the query is done (and its lock
		// released) here, the text is made chunk by chunk.
		return &ctlHandle{answer: ans.Render(format, hdr), big: len(ans.Entries) >= bigAnswer},
			fuse.FOPEN_DIRECT_IO, 0
	case kindStatus:
		if write {
			return nil, 0, syscall.EACCES
		}
		data, err := n.c.status()
		if err != nil {
			return nil, 0, toErrno(err)
		}
		return &ctlHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
	default: // ctl
		if write && !n.c.owner(ctx) {
			return nil, 0, syscall.EACCES
		}
		n.c.mu.Lock()
		text := hsmctl.Usage
		if n.consumer != "" {
			text = hsmctl.ConsumerUsage
		}
		if n.c.lastErr != "" {
			text += "last error: " + n.c.lastErr + "\n"
		}
		n.c.mu.Unlock()
		return &ctlHandle{data: []byte(text), ctl: n.c, consumer: n.consumer}, fuse.FOPEN_DIRECT_IO, 0
	}
}

// ctlHandle serves content made at open; on ctl it takes commands.
type ctlHandle struct {
	mu       sync.Mutex // guards data and answer against Release during a Read, and answer's reading position
	data     []byte
	answer   *checkpoint.Renderer // the answer of changes or changes.json
	big      bool                 // answer has bigAnswer entries or more
	ctl      *ctlState            // nil unless this is ctl
	consumer string               // a named consumer's ctl
}

var (
	_ = (gofs.FileReader)((*ctlHandle)(nil))
	_ = (gofs.FileWriter)((*ctlHandle)(nil))
	_ = (gofs.FileReleaser)((*ctlHandle)(nil))
)

// bigAnswer is the size of an answer (100,000 paths) after which its
// release hands the query's memory back to the kernel.
const bigAnswer = 100_000

// freeing is set while a FreeOSMemory runs.
var freeing atomic.Bool

// Release drops the answer. A query over a million paths allocates
// several hundred MB that are garbage once its answer is read; Go's
// collector would keep them mapped (the daemon stayed at 1.8-2.0 GiB RSS
// after such queries, against 0.5 GB live), so after a big answer one
// background FreeOSMemory returns them.
func (h *ctlHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	big := h.big
	h.data, h.answer = nil, nil
	h.mu.Unlock()
	if big && freeing.CompareAndSwap(false, true) {
		go func() {
			defer freeing.Store(false)
			debug.FreeOSMemory()
		}()
	}
	return 0
}

// Read serves the content. The reply is a vector that go-fuse writes with
// writev: as plain data, a reply of nearly 1 MiB (the mount's max_read,
// which a reader of a big answer asks for) would first be tried through
// a pipe that cannot hold it, and each such read would log a failed
// splice.
func (h *ctlHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.answer != nil {
		n, err := h.answer.ReadAt(dest, off)
		if err != nil && err != io.EOF {
			return nil, toErrno(err)
		}
		return fuse.ReadResultVector([][]byte{dest[:n]}), 0
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultVector(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultVector([][]byte{h.data[off:end]}), 0
}

// Write runs one command. It returns once the command's effect is
// durable; an unknown or malformed command fails with EINVAL and changes
// nothing.
func (h *ctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.ctl == nil {
		return 0, syscall.EBADF
	}
	if err := h.ctl.command(h.consumer, string(data)); err != nil {
		return 0, toErrno(err)
	}
	return uint32(len(data)), 0
}

// command runs one command written to the ctl of consumer ("" for
// .hsm/ctl).
func (c *ctlState) command(consumer, text string) error {
	cmd, err := hsmctl.ParseCommand(text)
	switch {
	case err != nil:
		c.setErr("%v", err)
		return syscall.EINVAL
	case consumer != "" && cmd.Verb != hsmctl.VerbBless:
		c.setErr("unknown command %q for consumer %s (commands: bless [ID] [full] [by WHO])", cmd.String(), consumer)
		return syscall.EINVAL
	}
	switch cmd.Verb {
	case hsmctl.VerbConsumerAdd, hsmctl.VerbConsumerRemove:
		return c.consumerCommand(cmd)
	case hsmctl.VerbTierAdd, hsmctl.VerbTierRemove:
		return c.tierCommand(cmd)
	case hsmctl.VerbNoRecall:
		if err := c.r.noRecall.add(int(cmd.ID)); err != nil {
			c.setErr("%v", err)
			return syscall.ESRCH
		}
		return nil
	case hsmctl.VerbCheckpoint:
		p, err := c.r.tr.Checkpoint()
		if err != nil {
			c.setErr("checkpoint failed: %v", err)
			return err
		}
		c.r.log.Info("checkpoint", "period", p)
		return nil
	}
	done, err := c.r.tr.BlessWith(checkpoint.Blessing{Consumer: consumer, ID: cmd.ID, Full: cmd.Full, By: cmd.By})
	if err != nil {
		c.setErr("%v", err)
		return err
	}
	c.r.log.Info("blessed", "query", done, "consumer", or(consumer, checkpoint.DefaultConsumer), "full", cmd.Full, "by", cmd.By)
	return nil
}

func (c *ctlState) consumerCommand(cmd hsmctl.Command) error {
	var err error
	verb := "add"
	if cmd.Verb == hsmctl.VerbConsumerAdd {
		err = c.r.tr.AddConsumer(cmd.Name)
	} else {
		verb = "rm"
		err = c.r.tr.RemoveConsumer(cmd.Name)
	}
	if err != nil {
		c.setErr("%v", err)
		return err
	}
	invalidateEntry(c.consumers, cmd.Name) // the kernel may hold NAME, or its absence (cache.go)
	c.r.log.Info("consumer "+verb, "consumer", cmd.Name)
	return nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *ctlState) status() ([]byte, error) {
	st, cs, err := c.r.tr.Status()
	if err != nil {
		return nil, err
	}
	out := hsmctl.Status{CurrentPeriod: st.Current, LastQuery: st.LastQuery, LastBlessed: st.LastBlessed,
		PendingPaths: st.PendingPaths, InFlight: st.InFlight, OpenForWrite: st.OpenForWrite,
		Recovered: st.Recovered, JournalSyncs: st.JournalSyncs, Run: st.Run, Mounted: c.r.mounted.Unix()}
	out.Nodes, out.NodesPruned = c.r.prune.counts()
	c.info(&out)
	out.Consumers = make([]hsmctl.ConsumerStatus, len(cs))
	for i, cn := range cs {
		out.Consumers[i] = hsmctl.ConsumerStatus{Name: cn.Name, LastQuery: cn.LastQuery, LastBlessed: cn.LastBlessed,
			LastQueryTime: cn.QueryTime, LastBlessTime: cn.BlessTime, BlessedBy: cn.BlessedBy, PendingPaths: cn.PendingPaths,
			OldestUnblessed: cn.OldestAge, Full: cn.Full, Reset: cn.Reset, Lagging: cn.Lagging}
	}
	if m := c.r.hsm; m != nil {
		out.Tiers = []hsmctl.Tier{}
		for _, t := range m.Tiers() {
			out.Tiers = append(out.Tiers, hsmctl.Tier{ID: t.ID, URL: t.URL})
		}
		n := m.Count()
		out.HSM = &hsmctl.HSMCounts{Files: n.Files, Bytes: n.Bytes}
	}
	b, _ := json.Marshal(out)
	return append(b, '\n'), nil
}

// tierCommand adds or removes an archive tier.
func (c *ctlState) tierCommand(cmd hsmctl.Command) error {
	if c.r.hsm == nil {
		c.setErr("this mount has no HSM")
		return syscall.ENOTSUP
	}
	var err error
	if cmd.Verb == hsmctl.VerbTierAdd {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = c.r.hsm.AddTier(ctx, cmd.Tier, cmd.URL)
		cancel()
	} else {
		err = c.r.hsm.RemoveTier(cmd.Tier)
	}
	if err != nil {
		c.setErr("%s: %v", cmd, err)
		return err
	}
	c.r.log.Info(cmd.String())
	return nil
}

// readerGone says, for a query run by an open of changes, whether its
// reader is gone. The kernel interrupts the request when the reader gets
// a signal, and then keeps a killed reader waiting, unkillable, until the
// request ends: a query must end soon after. But Go programs get signals
// all the time (the runtime's preemption), and their open is retried on
// EINTR: a query that stopped at every interrupt might never end for
// them. So once the request is interrupted, the reader counts as gone
// only if it is exiting, or has SIGKILL pending (the kernel turns every
// fatal signal into one), looked at in /proc at most ten times a second.
// It is called from one goroutine at a time.
func readerGone(ctx context.Context) func() bool {
	caller, ok := fuse.FromContext(ctx)
	if !ok || ctx.Done() == nil {
		return nil
	}
	var last time.Time
	gone := false
	return func() bool {
		if gone {
			return true
		}
		select {
		case <-ctx.Done():
		default:
			return false
		}
		if time.Since(last) < 100*time.Millisecond {
			return false
		}
		last = time.Now()
		gone = dying(int(caller.Pid))
		return gone
	}
}

// dying reports whether process pid is gone, exiting, or has SIGKILL
// pending.
func dying(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	const sigkill = 1 << (9 - 1)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			if strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X") {
				return true
			}
		case "SigPnd", "ShdPnd":
			if mask, err := strconv.ParseUint(v, 16, 64); err == nil && mask&sigkill != 0 {
				return true
			}
		}
	}
	return false
}
