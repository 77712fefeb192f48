package hsmctl

import "time"

// StatusWithin reads a mount's status, or nil if it cannot within wait
// (another user's mount, a busy daemon).
func StatusWithin(mnt string, wait time.Duration) *Status {
	ch := make(chan *Status, 1)
	go func() {
		c, err := Open(mnt, "")
		if err != nil {
			ch <- nil
			return
		}
		st, _, _ := c.Status()
		ch <- st
	}()
	select {
	case st := <-ch:
		return st
	case <-time.After(wait):
		return nil
	}
}
