package main

import (
	"fmt"
	"os"

	"github.com/hsmfs/hsmfs/internal/mountinfo"
)

// prepareMountpoint runs before `hsmfs mount` touches MOUNTPOINT: a dead
// hsmfs mount there (its daemon was killed, ran out of memory or
// panicked; the kernel answers ENOTCONN) is cleared, so that no one has
// to `umount -l` by hand. A live mount of anyone is refused, never
// cleared.
func prepareMountpoint(backing, mnt string) error {
	p, err := mountinfo.Resolve(mnt)
	if err != nil {
		return nil // resolve reports a missing MOUNTPOINT with its own words
	}
	m, err := mountinfo.At(p)
	if err != nil || m == nil {
		return err
	}
	switch m.State {
	case mountinfo.Dead:
		if err := mountinfo.ClearDead(p); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "hsmfs: cleared a dead hsmfs mount at %s (its daemon had died)\n", p)
		return nil
	case mountinfo.Live:
		return fmt.Errorf("%s is already mounted (hsmfs of %s)", p, m.Source)
	}
	// In place (BACKING = MOUNTPOINT), the mount found is BACKING's own
	// filesystem, which hsmfs is meant to cover.
	if b, err := mountinfo.Resolve(backing); err == nil && b == p {
		return nil
	}
	return fmt.Errorf("%s is already mounted (%s of %s): hsmfs does not mount over another mount", p, m.FSType, m.Source)
}

// umountDead clears a dead hsmfs mount for `hsmfs umount`, and refuses
// what is not an hsmfs mount. It reports whether umount is done.
func umountDead(p string) (done bool, err error) {
	m, err := mountinfo.At(p)
	switch {
	case err != nil:
		return false, err
	case m == nil:
		return false, fmt.Errorf("%s is not mounted", p)
	case m.State == mountinfo.Other:
		return false, fmt.Errorf("%s is not an hsmfs mount (%s of %s): left alone", p, m.FSType, m.Source)
	case m.State == mountinfo.Live:
		return false, nil
	}
	if err := mountinfo.ClearDead(p); err != nil {
		return false, err
	}
	fmt.Fprintf(os.Stderr, "hsmfs: cleared a dead hsmfs mount at %s (its daemon had died)\n", p)
	return true, nil
}
