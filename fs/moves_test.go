package fs

import (
	"context"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// A go-fuse tree without a mount: a root with children a and b.
func movesTree(t *testing.T) (root, a, b *gofs.Inode) {
	t.Helper()
	r := &gofs.Inode{}
	gofs.NewNodeFS(r, &gofs.Options{})
	ctx := context.Background()
	a = r.NewPersistentInode(ctx, &gofs.Inode{}, gofs.StableAttr{Ino: 2})
	b = r.NewPersistentInode(ctx, &gofs.Inode{}, gofs.StableAttr{Ino: 3})
	r.AddChild("a", a, false)
	r.AddChild("b", b, false)
	return r, a, b
}

func TestMovesSettle(t *testing.T) {
	root, a, b := movesTree(t)
	var ms moves

	// Nothing listed: no wait.
	if !ms.settle() {
		t.Fatal("settle of an empty list failed")
	}

	// A rename that go-fuse applies while settle waits.
	ms.add(root, "a", a)
	go func() {
		time.Sleep(20 * time.Millisecond)
		root.MvChild("a", root, "c", true)
	}()
	t0 := time.Now()
	if !ms.settle() {
		t.Fatal("settle failed although the move was applied")
	}
	if d := time.Since(t0); d < 15*time.Millisecond {
		t.Fatalf("settle returned after %v, before the move was applied", d)
	}

	// An exchange counts as applied: another node is at the old name.
	ms.add(root, "b", b)
	root.ExchangeChild("b", root, "c")
	if !ms.settle() {
		t.Fatal("settle failed after an exchange")
	}

	// A rename never applied: settle gives up after settleTimeout, and
	// drops it.
	ms.add(root, "b", a) // a is at b now
	t0 = time.Now()
	if ms.settle() {
		t.Fatal("settle succeeded although the move was not applied")
	}
	if d := time.Since(t0); d < settleTimeout {
		t.Fatalf("settle gave up after %v, want %v", d, settleTimeout)
	}
	if len(ms.list) != 0 {
		t.Fatalf("%d renames left after a timeout", len(ms.list))
	}

	// A link brings the inode back to its old name: the sweep before it
	// saw the move applied.
	ms.add(root, "b", a)
	root.MvChild("b", root, "d", true)
	ms.sweep() // Link does this first
	root.AddChild("b", a, false)
	if len(ms.list) != 0 || !ms.settle() {
		t.Fatal("the rename was still listed after the sweep before a link")
	}
}
