package checkpoint

import (
	"fmt"
	"slices"
	"time"
)

// The State's methods: the cursors of the default and named consumers,
// and what a query, a bless and a recovery change in them. The tracker
// calls them on a copy (saveState) and makes the copy durable before it
// is the state.

func (c Consumer) clone() Consumer {
	c.Queries = slices.Clone(c.Queries)
	return c
}

// Clone copies st deeply: mutators of a State given by saveState must not
// write into slices that the current state shares.
func (st State) Clone() State {
	st.NotQueries = slices.Clone(st.NotQueries)
	cs := make([]Consumer, len(st.Consumers))
	for i, c := range st.Consumers {
		cs[i] = c.clone()
	}
	if st.Consumers == nil {
		cs = nil
	}
	st.Consumers = cs
	return st
}

func (st *State) consumer(name string) *Consumer {
	for i := range st.Consumers {
		if st.Consumers[i].Name == name {
			return &st.Consumers[i]
		}
	}
	return nil
}

// cursor is where one consumer stands.
type cursor struct {
	name                                string // "" for the default
	lastQuery, lastBlessed, recoveredAt uint64
	blessSeq                            uint64 // State.BlessSeq
	full, reset                         bool
	blessedBy                           string
}

func (st *State) cursor(name string) (cursor, error) {
	if name == "" || name == DefaultConsumer {
		return cursor{lastQuery: st.LastQuery, lastBlessed: st.LastBlessed, recoveredAt: st.RecoveredAt, full: st.Full,
			blessedBy: st.BlessedBy, blessSeq: st.BlessSeq}, nil
	}
	c := st.consumer(name)
	if c == nil {
		return cursor{}, fmt.Errorf("consumer %q: %w", name, ErrUnknownConsumer)
	}
	return cursor{name: name, lastQuery: c.LastQuery, lastBlessed: c.LastBlessed, recoveredAt: c.RecoveredAt,
		full: c.Full, reset: c.Reset, blessedBy: c.BlessedBy, blessSeq: c.BlessSeq}, nil
}

// keepFrom is the lowest period that some consumer still needs.
func (st *State) keepFrom() uint64 {
	p := st.LastBlessed
	for _, c := range st.Consumers {
		p = min(p, c.LastBlessed)
	}
	return p
}

// queried records that consumer cur's query P was answered.
func (st *State) queried(cur cursor, P uint64, now time.Time) {
	if cur.name == "" {
		st.LastQuery = P
		st.QueryTime = now.Unix()
		st.NotQueries = slices.DeleteFunc(st.NotQueries, func(p uint64) bool { return p == P })
		return
	}
	// P stays in NotQueries: the default consumer never got it.
	c := st.consumer(cur.name)
	c.LastQuery = P
	c.Queries = append(c.Queries, P)
	c.QueryTime = now.Unix()
}

// checkBless says whether consumer cur may bless id (above its last
// bless); full says that the consumer copied the whole tree.
func (st *State) checkBless(cur cursor, id uint64, full bool) error {
	if cur.name == "" {
		if slices.Contains(st.NotQueries, id) {
			return fmt.Errorf("bless %d: period %d was not started by a query of this consumer (a checkpoint, a mount, or another consumer's query), or that query was answered before a full copy was required: %w", id, id, ErrUnknownQuery)
		}
	} else if !slices.Contains(st.consumer(cur.name).Queries, id) {
		return fmt.Errorf("bless %d: consumer %q did not run query %d: %w", id, cur.name, id, ErrUnknownQuery)
	}
	if cur.recoveredAt != 0 && id < cur.recoveredAt {
		// The consumer copied that answer before the crash, and the
		// crash may have undone in BACKING what it copied (a power cut
		// loses what was not synced). Blessing it now would sync the
		// undone state and discard the records that describe it.
		return fmt.Errorf("bless %d: that query was answered before hsmfs recovered from a crash (period %d); run a new query: %w",
			id, cur.recoveredAt, ErrUnknownQuery)
	}
	if cur.full && !full {
		// A reader of the plain answer never sees the header's full: a
		// bless that does not say it would end the requirement without
		// the copy.
		return fmt.Errorf("bless %d: the answer said full (a new consumer, a reset, changes made around hsmfs that could not be listed, or paths past the bound), "+
			"so its paths alone cannot update a copy; copy the whole tree (rsync -a -I --delete --exclude=/.hsm MOUNTPOINT/ DEST/, or hsmfs sync), "+
			"then write \"bless %d full\" (hsmfs bless --full): %w", id, id, ErrFullCopy)
	}
	return nil
}

// blessed moves consumer cur's cursor to id, blessed by by.
func (st *State) blessed(cur cursor, id uint64, by string, now time.Time, seq uint64) {
	if cur.name == "" {
		st.LastBlessed, st.BlessSeq = id, seq
		st.BlessTime, st.BlessedBy = now.Unix(), by
		st.Full = false
		st.NotQueries = slices.DeleteFunc(st.NotQueries, func(p uint64) bool { return p <= id })
		if st.RecoveredAt != 0 && id >= st.RecoveredAt {
			st.RecoveredAt = 0
		}
		return
	}
	c := st.consumer(cur.name)
	c.LastBlessed, c.BlessSeq = id, seq
	c.Queries = slices.DeleteFunc(c.Queries, func(p uint64) bool { return p <= id })
	if c.RecoveredAt != 0 && id >= c.RecoveredAt {
		c.RecoveredAt = 0
	}
	c.Full, c.Reset = false, false
	c.BlessTime, c.BlessedBy = now.Unix(), by
}

// recovered marks every named consumer after an unclean end, as the
// default's RecoveredAt.
func (st *State) recovered(p uint64) {
	for i := range st.Consumers {
		st.Consumers[i].RecoveredAt = p
	}
}
